/*
 * tick.S - bare-metal AArch64 "witness" guest for the migproxy QEMU lab.
 *
 * Load with:  qemu-system-aarch64 -M virt-X -cpu cortex-a57 -kernel tick.bin ...
 *
 * The boot CPU keeps a 64-bit counter in RAM and, every TICK_NUM/TICK_DEN
 * seconds of guest virtual time (generic timer: CNTVCT_EL0 / CNTFRQ_EL0),
 * increments it and prints "tick N\n" on the PL011 UART at 0x09000000.
 * After a correct migration the destination's first complete line is
 * "tick N+1" where N was the source's last.
 *
 * Pacing: with a GICv2 (the virt default) the CPU sleeps in WFI until the
 * virtual timer PPI (INTID 27) is pending, so an idle guest costs no host
 * CPU.  Interrupts stay masked in PSTATE (no vector table is needed): WFI
 * wakes on a pending interrupt regardless of PSTATE.I, and the interrupt is
 * acknowledged by polling GICC_IAR/GICC_EOIR.  If the CPU reports a GICv3
 * system-register interface (ID_AA64PFR0_EL1.GIC != 0, i.e. the board has a
 * GICv3) the guest falls back to busy-polling CNTVCT_EL0.
 *
 * The image starts with an arm64 Linux Image header so QEMU's -kernel loader
 * places it at RAM base + 0x80000 (0x40080000) and enters it at EL1 with
 * the MMU off.  Secondary CPUs are kept powered off by QEMU's PSCI emulation;
 * should one ever get here it parks itself.
 */

        .equ    UART_BASE,      0x09000000
        .equ    UART_DR,        0x000
        .equ    UART_FR,        0x018
        .equ    UART_CR,        0x030
        .equ    UART_FR_TXFF,   5               /* bit: transmit FIFO full */
        .equ    UART_CR_ON,     0x301           /* UARTEN | TXE | RXE */

        .equ    GICD_BASE,      0x08000000
        .equ    GICC_BASE,      0x08010000
        .equ    GICD_CTLR,      0x000
        .equ    GICD_ISENABLER0, 0x100
        .equ    GICD_IPRIORITYR, 0x400
        .equ    GICC_CTLR,      0x000
        .equ    GICC_PMR,       0x004
        .equ    GICC_IAR,       0x00c
        .equ    GICC_EOIR,      0x010
        .equ    VTIMER_INTID,   27              /* PPI 11: EL1 virtual timer */

        .equ    TICK_NUM,       3               /* period = 3/10 s */
        .equ    TICK_DEN,       10
        .equ    DEFAULT_FREQ,   62500000        /* used only if CNTFRQ_EL0 == 0 */

        .text
        .globl  _start
_start:
        /* arm64 Image header (Documentation/arch/arm64/booting.rst) */
        b       entry                           /* code0 */
        .long   0                               /* code1 */
        .quad   0x80000                         /* text_offset */
        .quad   image_end - _start              /* image_size */
        .quad   0                               /* flags: LE, 4K-agnostic */
        .quad   0, 0, 0                         /* res2..res4 */
        .ascii  "ARM\x64"                       /* magic */
        .long   0                               /* res5 */

entry:
        mrs     x0, mpidr_el1
        and     x0, x0, #0xffffff               /* Aff2..Aff0 */
        cbnz    x0, park

        adr     x1, stack_top
        mov     sp, x1
        adr     x20, counter                    /* x20: &counter (in RAM) */
        mov     x19, #UART_BASE                 /* x19: PL011 base */
        mov     w0, #UART_CR_ON
        str     w0, [x19, #UART_CR]

        /* x21 = timer ticks per period */
        mrs     x21, cntfrq_el0
        cbnz    x21, 1f
        ldr     x21, =DEFAULT_FREQ
1:      mov     x1, #TICK_NUM
        mul     x21, x21, x1
        mov     x1, #TICK_DEN
        udiv    x21, x21, x1

        /* x22 != 0: no usable GICv2 -> busy-poll the counter */
        mrs     x22, id_aa64pfr0_el1
        ubfx    x22, x22, #24, #4
        cbnz    x22, main_loop
        bl      gic_init

main_loop:
        isb
        mrs     x23, cntvct_el0                 /* x23: start of this period */
        cbnz    x22, poll_wait

        /* arm the virtual timer for start + period, then sleep */
        add     x0, x23, x21
        msr     cntv_cval_el0, x0
        mov     x0, #1                          /* ENABLE, IMASK = 0 */
        msr     cntv_ctl_el0, x0
        isb
wfi_wait:
        wfi
        isb
        mrs     x0, cntvct_el0
        sub     x0, x0, x23                     /* unsigned: a counter going */
        cmp     x0, x21                         /* backwards ends the wait */
        b.lo    wfi_wait
        msr     cntv_ctl_el0, xzr               /* disable: line deasserts */
        isb
        mov     x2, #GICC_BASE
        ldr     w0, [x2, #GICC_IAR]
        and     w1, w0, #0x3ff
        cmp     w1, #1020
        b.hs    tick                            /* spurious: nothing to EOI */
        str     w0, [x2, #GICC_EOIR]
        b       tick

poll_wait:
        isb
        mrs     x0, cntvct_el0
        sub     x0, x0, x23
        cmp     x0, x21
        b.lo    poll_wait

tick:
        ldr     x0, [x20]
        add     x0, x0, #1
        str     x0, [x20]
        mov     x24, x0
        adr     x0, msg_tick
        bl      puts
        mov     x0, x24
        bl      put_dec
        mov     w0, #'\n'
        bl      putc
        b       main_loop

/* GICv2: forward group 0 interrupts, enable the virtual timer PPI. */
gic_init:
        mov     x2, #GICD_BASE
        mov     w0, #1
        str     w0, [x2, #GICD_CTLR]
        mov     w0, #(1 << VTIMER_INTID)
        str     w0, [x2, #GICD_ISENABLER0]
        mov     w0, #0xa0
        strb    w0, [x2, #(GICD_IPRIORITYR + VTIMER_INTID)]
        mov     x2, #GICC_BASE
        mov     w0, #0xf0
        str     w0, [x2, #GICC_PMR]
        mov     w0, #1
        str     w0, [x2, #GICC_CTLR]
        ret

/* putc(w0): blocking write of one byte to the UART. Clobbers w1. */
putc:
        ldr     w1, [x19, #UART_FR]
        tbnz    w1, #UART_FR_TXFF, putc
        strb    w0, [x19, #UART_DR]
        ret

/* puts(x0): NUL-terminated string. */
puts:
        stp     x29, x30, [sp, #-32]!
        str     x25, [sp, #16]
        mov     x25, x0
1:      ldrb    w0, [x25], #1
        cbz     w0, 2f
        bl      putc
        b       1b
2:      ldr     x25, [sp, #16]
        ldp     x29, x30, [sp], #32
        ret

/* put_dec(x0): unsigned decimal. */
put_dec:
        stp     x29, x30, [sp, #-32]!
        str     x25, [sp, #16]
        adr     x25, numbuf_end
        strb    wzr, [x25, #-1]!                /* terminator */
        mov     x3, #10
1:      udiv    x4, x0, x3
        msub    x5, x4, x3, x0                  /* x5 = x0 % 10 */
        add     w5, w5, #'0'
        strb    w5, [x25, #-1]!
        mov     x0, x4
        cbnz    x0, 1b
        mov     x0, x25
        bl      puts
        ldr     x25, [sp, #16]
        ldp     x29, x30, [sp], #32
        ret

park:
        wfi
        b       park

msg_tick:
        .asciz  "tick "

        .ltorg

        /* Data on its own page so that stores do not hit translated code. */
        .balign 4096
counter:
        .quad   0
numbuf:
        .space  32
numbuf_end:
        .balign 16
        .space  1024
stack_top:
image_end:
