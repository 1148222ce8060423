/* comm_pack: packing ranges of comm's logical vector into payloads of float32 and
 * bfloat16 elements and back (see comm_pack.h). The loops are plain element loops over
 * memcpy'd values, which the compiler turns into vector code. */
#include "comm_pack.h"

/* A piece of a range: consecutive elements of one span, all in one precision. */
typedef struct piece {
    float *p;
    size_t n;
    int bf16;
} piece;

/* Walks [at, at + left) piece by piece: cut at span boundaries and at each span's
 * bfloat16 boundary. */
typedef struct pieces {
    const comm_layout *l;
    size_t at, left;
    int i;
} pieces;

static pieces pieces_of(const comm_layout *l, size_t off, size_t len)
{
    pieces it = {l, off, len, 0};
    while (it.i < l->nspans && l->start[it.i + 1] <= off)
        it.i++;
    return it;
}

static int next_piece(pieces *it, piece *pc)
{
    while (it->left > 0 && it->i < it->l->nspans) {
        const kd_comm_span *s = &it->l->spans[it->i];
        size_t in = it->at - it->l->start[it->i];
        size_t lossy = s->bf16 < s->n ? s->bf16 : s->n;
        size_t end = in < lossy ? lossy : s->n;
        size_t n = end - in < it->left ? end - in : it->left;
        if (in + n == s->n)
            it->i++;
        if (n == 0)
            continue; /* an empty span */
        *pc = (piece){s->data + in, n, in < lossy};
        it->at += n;
        it->left -= n;
        return 1;
    }
    return 0;
}

int comm_pack_any(const comm_layout *l)
{
    for (int i = 0; i < l->nspans; i++)
        if (l->spans[i].bf16 > 0 && l->spans[i].n > 0)
            return 1;
    return 0;
}

size_t comm_pack_bytes(const comm_layout *l, size_t off, size_t len)
{
    size_t bytes = 0;
    pieces it = pieces_of(l, off, len);
    for (piece pc; next_piece(&it, &pc);)
        bytes += pc.n * (pc.bf16 ? 2 : 4);
    return bytes;
}

/* Plain loops on 16- and 32-bit integers that GCC vectorises (-O3, runtime/
 * CMakeLists.txt), compiled for AVX-512 and AVX2 as well as the baseline and picked at
 * load time, as kd_optim's are: a gradient is packed and unpacked every step. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define COMM_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define COMM_CLONES
#endif

COMM_CLONES static void bf16_pack(const float *restrict p, uint16_t *restrict out, size_t n)
{
    for (size_t j = 0; j < n; j++)
        out[j] = comm_bf16_of(p[j]);
}

/* p[j] = (add ? p[j] : 0) + the float of b[j]. */
COMM_CLONES static void bf16_unpack(float *restrict p, const uint16_t *restrict b, size_t n,
                                    int add)
{
    if (add) {
        for (size_t j = 0; j < n; j++)
            p[j] += comm_f32_of(b[j]);
    } else {
        for (size_t j = 0; j < n; j++)
            p[j] = comm_f32_of(b[j]);
    }
}

COMM_CLONES static void f32_add(float *restrict p, const unsigned char *restrict in, size_t n)
{
    for (size_t j = 0; j < n; j++) {
        float v;
        memcpy(&v, in + 4 * j, sizeof v);
        p[j] += v;
    }
}

size_t comm_pack(const comm_layout *l, size_t off, size_t len, unsigned char *out, int keep)
{
    unsigned char *start = out;
    pieces it = pieces_of(l, off, len);
    for (piece pc; next_piece(&it, &pc);) {
        if (pc.bf16) {
            uint16_t *b = (uint16_t *)(void *)out;
            bf16_pack(pc.p, b, pc.n);
            if (keep)
                bf16_unpack(pc.p, b, pc.n, 0);
            out += 2 * pc.n;
        } else {
            memcpy(out, pc.p, pc.n * sizeof(float));
            out += 4 * pc.n;
        }
    }
    return (size_t)(out - start);
}

static void unpack_piece(const piece *pc, const unsigned char *in, int add)
{
    if (pc->bf16)
        bf16_unpack(pc->p, (const uint16_t *)(const void *)in, pc->n, add);
    else if (add)
        f32_add(pc->p, in, pc->n);
    else
        memcpy(pc->p, in, pc->n * sizeof(float));
}

void comm_unpack(const comm_layout *l, size_t off, size_t len, const unsigned char *in,
                 int add)
{
    pieces it = pieces_of(l, off, len);
    for (piece pc; next_piece(&it, &pc);) {
        unpack_piece(&pc, in, add);
        in += pc.n * (pc.bf16 ? 2 : 4);
    }
}

/* Every received gradient goes through this before it is applied (a 940 KB swap per step
 * for the sample, ~4% of a two-agent step with SSE2): wider vectors where the CPU has
 * them, chosen once at load time. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
int kd_comm_all_finite(const void *le_floats, size_t n)
{
    const unsigned char *p = le_floats;
    uint32_t bad = 0;
    /* An exponent of all ones is an infinity or a NaN; or-ing the test over the vector
     * (no early exit) keeps the loop branch-free, so it vectorises. */
    for (size_t i = 0; i < n; i++) {
        uint32_t x;
        memcpy(&x, p + 4 * i, sizeof x);
        bad |= (x & 0x7f800000u) == 0x7f800000u;
    }
    return bad == 0;
}
