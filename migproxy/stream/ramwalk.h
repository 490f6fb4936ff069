/*
 * The RAM record walk of migproxy's stream framer, shared by the compiled walk
 * (_ramwalk.c) and the executor's RAM pump (migproxy/daemon/_rampump.c). No Python, no
 * I/O: it only reads bytes.
 *
 * From b[pos], ram_walk() takes the records the framer meets by the million:
 * PAGE|CONTINUE (a record word, then one page) and ZERO|CONTINUE (a record word, then one
 * fill byte), each checked as the Python loop checks it (a block is named and the page
 * lies inside it). It stops before the first record that is anything else, incomplete
 * before ``end``, or out of its block, and returns that record's position; the Python
 * framer handles that record exactly as without the walk.
 */
#ifndef MIGPROXY_RAMWALK_H
#define MIGPROXY_RAMWALK_H

#include <stddef.h>
#include <stdint.h>

#define RAM_ZERO_CONT 0x22u
#define RAM_PAGE_CONT 0x28u

struct ram_block {
    uint64_t page_size; /* a power of two, at least 512 */
    uint64_t mask;      /* page_size - 1 */
    uint64_t last;      /* the largest page offset inside the block */
    int fits;           /* a block is named and holds at least one page */
};

static inline struct ram_block ram_block_of(uint64_t page_size, uint64_t block_len,
                                            int have_block)
{
    struct ram_block rb;
    rb.page_size = page_size;
    rb.mask = page_size - 1;
    rb.fits = have_block && block_len >= page_size;
    rb.last = rb.fits ? block_len - page_size : 0;
    return rb;
}

static inline uint64_t ram_be64(const unsigned char *p)
{
    return ((uint64_t)p[0] << 56) | ((uint64_t)p[1] << 48) | ((uint64_t)p[2] << 40) |
           ((uint64_t)p[3] << 32) | ((uint64_t)p[4] << 24) | ((uint64_t)p[5] << 16) |
           ((uint64_t)p[6] << 8) | (uint64_t)p[7];
}

/* Walk b[pos:end]; add the records taken to *pages and *zeros; return where it stopped. */
static inline size_t ram_walk(const unsigned char *b, size_t pos, size_t end,
                              const struct ram_block *rb, size_t *pages, size_t *zeros)
{
    const uint64_t ps = rb->page_size, mask = rb->mask, last = rb->last;
    const int fits = rb->fits;

    while (end - pos >= 8) {
        const uint64_t word = ram_be64(b + pos);
        const uint64_t flags = word & mask;
        const uint64_t offset = word ^ flags;

        if (flags == RAM_PAGE_CONT) {
            if (!fits || offset > last || (uint64_t)(end - pos - 8) < ps)
                break;
            pos += 8 + (size_t)ps;
            (*pages)++;
        } else if (flags == RAM_ZERO_CONT) {
            if (end - pos < 9 || !fits || offset > last)
                break;
            pos += 9;
            (*zeros)++;
        } else {
            break;
        }
    }
    return pos;
}

/* Whether the walk stopped at b[pos] only because the record is not complete before
 * ``end`` (a record it would take once more bytes come), rather than at a record the
 * Python framer must decide. */
static inline int ram_walk_incomplete(const unsigned char *b, size_t pos, size_t end,
                                      const struct ram_block *rb)
{
    uint64_t word, flags, offset;

    if (end - pos < 8)
        return 1;
    word = ram_be64(b + pos);
    flags = word & rb->mask;
    offset = word ^ flags;
    if (!rb->fits || offset > rb->last)
        return 0;
    if (flags == RAM_PAGE_CONT)
        return (uint64_t)(end - pos - 8) < rb->page_size;
    if (flags == RAM_ZERO_CONT)
        return end - pos < 9;
    return 0;
}

#endif
