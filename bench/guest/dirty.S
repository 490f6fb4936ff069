/*
 * dirty.S - bare-metal AArch64 guest for the migproxy QEMU benchmark: dirties RAM.
 *
 * Load with:  qemu-system-aarch64 -M virt-10.0 -cpu cortex-a57 -m 512M -kernel dirty.bin
 * (built by bench/qemu_bench.py like scripts/lab-setup.sh builds tests/guest/tick.S).
 *
 * 1. Fills FILL_SIZE (300 MiB) of RAM from FILL_BASE with non-zero data (every 8-byte
 *    word is its own address plus a constant), except about 3 pages in 10, chosen by a
 *    hash of the page number, which stay zero: fragmented memory, so a migration sends
 *    full and zero pages mixed at random, as from a guest whose free memory is scattered.
 *    Then it prints "filled".
 * 2. Then, every PERIOD_NUM/PERIOD_DEN seconds of guest virtual time, writes one word into
 *    every 4 KiB page of the first HOT_SIZE (16 MiB) of that region: 4096 pages are
 *    dirtied again each period, so a live migration has to send them again in every
 *    iteration (and converges once 16 MiB fit in the downtime limit). Every
 *    PRINT_EVERY periods (0.1 s) it prints "pass N" (N = periods so far) on the PL011 UART.
 *
 * Between periods the CPU sleeps in WFI until the virtual timer fires (GICv2, as in
 * tests/guest/tick.S), so the guest does not keep a host CPU busy; with a GICv3 it
 * busy-polls the counter instead. The image starts with an arm64 Linux Image header so
 * QEMU's -kernel loader places it at 0x40080000 and enters it at EL1, MMU off (all data
 * accesses below are aligned, as Device memory requires).
 */

        .equ    UART_BASE,      0x09000000
        .equ    UART_DR,        0x000
        .equ    UART_FR,        0x018
        .equ    UART_CR,        0x030
        .equ    UART_FR_TXFF,   5
        .equ    UART_CR_ON,     0x301

        .equ    GICD_BASE,      0x08000000
        .equ    GICC_BASE,      0x08010000
        .equ    GICD_CTLR,      0x000
        .equ    GICD_ISENABLER0, 0x100
        .equ    GICD_IPRIORITYR, 0x400
        .equ    GICC_CTLR,      0x000
        .equ    GICC_PMR,       0x004
        .equ    GICC_IAR,       0x00c
        .equ    GICC_EOIR,      0x010
        .equ    VTIMER_INTID,   27

        .equ    FILL_BASE,      0x41000000      /* RAM base + 16 MiB, far from the code */
        .equ    FILL_SIZE,      (300 << 20)
        .equ    HOT_SIZE,       (16 << 20)
        .equ    ZERO_OF_256,    77              /* pages left zero: 77/256 = 0.30 */
        .equ    PERIOD_NUM,     1               /* period = 1/100 s */
        .equ    PERIOD_DEN,     100
        .equ    PRINT_EVERY,    10              /* print every 0.1 s */
        .equ    DEFAULT_FREQ,   62500000

        .text
        .globl  _start
_start:
        b       entry                           /* arm64 Image header */
        .long   0
        .quad   0x80000                         /* text_offset */
        .quad   image_end - _start              /* image_size */
        .quad   0
        .quad   0, 0, 0
        .ascii  "ARM\x64"
        .long   0

entry:
        mrs     x0, mpidr_el1
        and     x0, x0, #0xffffff
        cbnz    x0, park

        adr     x1, stack_top
        mov     sp, x1
        mov     x19, #UART_BASE
        mov     w0, #UART_CR_ON
        str     w0, [x19, #UART_CR]

        /* 1. fill every page whose hash (top byte of page number * golden ratio) is at
              least ZERO_OF_256; the others stay zero */
        ldr     x1, =FILL_BASE
        ldr     x2, =(FILL_BASE + FILL_SIZE)
        ldr     x3, =0x5a5a5a5a00000001
        ldr     x6, =0x9e3779b97f4a7c15
fill_page:
        lsr     x5, x1, #12
        mul     x5, x5, x6
        lsr     x5, x5, #56
        add     x7, x1, #4096
        cmp     x5, #ZERO_OF_256
        b.lo    page_done
fill:
        add     x4, x1, x3
        stp     x4, x4, [x1], #16
        cmp     x1, x7
        b.lo    fill
page_done:
        mov     x1, x7
        cmp     x1, x2
        b.lo    fill_page
        adr     x0, msg_filled
        bl      puts

        /* x21 = timer ticks per period; x22 != 0: no GICv2, busy-poll */
        mrs     x21, cntfrq_el0
        cbnz    x21, 1f
        ldr     x21, =DEFAULT_FREQ
1:      mov     x1, #PERIOD_NUM
        mul     x21, x21, x1
        mov     x1, #PERIOD_DEN
        udiv    x21, x21, x1
        mrs     x22, id_aa64pfr0_el1
        ubfx    x22, x22, #24, #4
        cbnz    x22, 2f
        bl      gic_init
2:      mov     x20, #0                         /* x20: periods so far */

        /* 2. dirty the hot pages once per period */
main_loop:
        isb
        mrs     x23, cntvct_el0
        add     x20, x20, #1
        ldr     x1, =FILL_BASE
        ldr     x2, =(FILL_BASE + HOT_SIZE)
dirty:
        str     x20, [x1]
        add     x1, x1, #4096
        cmp     x1, x2
        b.lo    dirty

        mov     x0, #PRINT_EVERY
        udiv    x1, x20, x0
        msub    x1, x1, x0, x20
        cbnz    x1, wait
        adr     x0, msg_pass
        bl      puts
        mov     x0, x20
        bl      put_dec
        mov     w0, #'\n'
        bl      putc

wait:
        cbnz    x22, poll_wait
        add     x0, x23, x21
        msr     cntv_cval_el0, x0
        mov     x0, #1
        msr     cntv_ctl_el0, x0
        isb
wfi_wait:
        wfi
        isb
        mrs     x0, cntvct_el0
        sub     x0, x0, x23
        cmp     x0, x21
        b.lo    wfi_wait
        msr     cntv_ctl_el0, xzr
        isb
        mov     x2, #GICC_BASE
        ldr     w0, [x2, #GICC_IAR]
        and     w1, w0, #0x3ff
        cmp     w1, #1020
        b.hs    main_loop
        str     w0, [x2, #GICC_EOIR]
        b       main_loop

poll_wait:
        isb
        mrs     x0, cntvct_el0
        sub     x0, x0, x23
        cmp     x0, x21
        b.lo    poll_wait
        b       main_loop

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

/* putc(w0). Clobbers w1. */
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
        strb    wzr, [x25, #-1]!
        mov     x3, #10
1:      udiv    x4, x0, x3
        msub    x5, x4, x3, x0
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

msg_filled:
        .asciz  "filled\n"
msg_pass:
        .asciz  "pass "

        .ltorg

        /* Data on its own page so that stores do not hit translated code. */
        .balign 4096
numbuf:
        .space  32
numbuf_end:
        .balign 16
        .space  1024
stack_top:
image_end:
