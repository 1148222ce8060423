/* comm_ring: the schedules of comm's operations (see comm.h): the ring allreduce
 * (reduce-scatter then all-gather, chunk by chunk as the caller marks data final), the
 * two-rank swap, and the all-gather of kd_comm_allgatherv, on top of comm.c's checked
 * chunk sends and receives. */
#include "comm_int.h"

#include <string.h>

#include "kd_error.h"
#include "kd_wire.h"

static uint32_t comm_aux(uint32_t phase, int ring_step)
{
    return (phase << 16) | (uint32_t)ring_step;
}

/* The segment a stage's ring step k works on. Reduce-scatter: we send our segment r,
 * then W-1 times receive segment (r-k-1), add our values into it and forward the partial
 * sum; the last one received, segment r+1, is complete and starts the all-gather, in
 * which we W-1 times receive the final segment (r-k), copy it and forward it unless the
 * next rank already has it. */
static size_t comm_seg(const kd_comm *c, int stage, int k)
{
    int w = c->world, r = c->rank;
    if (stage == COMM_ST_SEND)
        return (size_t)r;
    if (stage == COMM_ST_RS)
        return (size_t)((r - k - 1 + 2 * w) % w);
    return (size_t)((r - k + 2 * w) % w);
}

/* Moves to ring step k of stage (or to the next stage when k is past the last). */
static void comm_enter(kd_comm *c, int stage, int k)
{
    int steps = stage == COMM_ST_SEND ? 1 : c->world - 1;
    if (stage != COMM_ST_DONE && k >= steps) {
        comm_enter(c, stage + 1, 0);
        return;
    }
    c->stage = stage;
    c->k = k;
    if (stage != COMM_ST_DONE)
        c->next = c->seg_first[comm_seg(c, stage, k)];
}

/* The packing area of the ring's reduce-scatter (0) or all-gather (1) phase: each phase
 * sends every chunk at most once. */
static unsigned char *comm_area(kd_comm *c, int ag)
{
    return c->packbuf + (ag ? c->layout.start[c->layout.nspans] * sizeof(float) : 0);
}

/* Two ranks: each sends every chunk to the other as soon as it is final and adds the
 * peer's chunk into its own once that chunk is sent. One network hop instead of the
 * ring's two, the same bytes; a + b == b + a, so both ranks end with bit-identical sums.
 * What is sent is first copied to sendbuf (ZeroMQ then sends that zero-copy), so that
 * adding into our buffer cannot race with ZeroMQ still reading it; bfloat16 elements are
 * rounded in our buffer as they are copied, so both ranks add the same two values.
 * Deferred (kd_comm_begin_deferred), nothing is added into our buffer: a chunk inside one
 * span goes out straight from it and the peer's payloads are kept for the caller. Like
 * the ring, the operation ends only once ZeroMQ has let go of every payload, so that a
 * world change or an exit right after it cannot drop our last chunk on its way to the
 * peer (and, deferred, before the caller writes into what we sent). */
static int comm_progress_swap(kd_comm *c, int wait)
{
    uint32_t aux = comm_aux(COMM_PHASE_SWAP, 0);
    int rc;
    while (c->rnext < c->nchunks) {
        while (c->next < c->nchunks && c->ready[c->next] == c->chunks[c->next].len) {
            const comm_chunk *ch = &c->chunks[c->next];
            if (c->defer && ch->span_off + ch->len <= c->spans[ch->span].n) {
                rc = comm_send_view(c, aux, c->step, ch, c->spans);
            } else {
                unsigned char *out = (unsigned char *)(c->sendbuf + ch->off);
                size_t bytes = comm_pack(&c->layout, (size_t)ch->off, ch->len, out, 1);
                rc = comm_send_bytes(c, c->packed ? KD_WIRE_DATA_BF16 : KD_WIRE_DATA, aux,
                                     c->step, ch->off, out, bytes);
            }
            if (rc != KD_OK)
                return rc;
            c->next++;
        }
        if (c->rnext == c->next)
            return wait ? KD_EINVAL : KD_OK; /* our own values are not final yet */
        const comm_chunk *ch = &c->chunks[c->rnext];
        zmq_msg_t in;
        rc = comm_recv(c, aux, c->step, ch, &in, wait);
        if (rc == COMM_PENDING)
            return KD_OK;
        if (rc != KD_OK)
            return rc;
        if (c->defer) {
            zmq_msg_t *keep = &c->held[c->nheld];
            zmq_msg_init(keep);
            zmq_msg_move(keep, &in);
            c->peer[c->nheld++] = (kd_comm_piece){(size_t)ch->off, ch->len, zmq_msg_data(keep)};
        } else {
            comm_unpack(&c->layout, (size_t)ch->off, ch->len, comm_payload(c, &in), 1);
        }
        zmq_msg_close(&in);
        c->rnext++;
    }
    c->stage = COMM_ST_DONE;
    return wait ? comm_wait_released(c, c->timeout_ms) : KD_OK;
}

/* Runs the ring schedule as far as it can. wait = 0: stops (KD_OK) at the first chunk
 * whose local data is not final yet or whose message has not arrived; wait = 1: blocks
 * on messages (all data must be final) and returns once ZeroMQ has released every
 * zero-copy payload. */
static int comm_progress(kd_comm *c, int wait)
{
    int w = c->world, rc;
    const kd_comm_span *spans = c->spans;
    uint64_t step = c->step;
    if (c->stage == COMM_ST_SWAP)
        return comm_progress_swap(c, wait);
    while (c->stage != COMM_ST_DONE) {
        size_t s = comm_seg(c, c->stage, c->k);
        if (c->next == c->seg_first[s + 1]) {
            comm_enter(c, c->stage, c->k + 1);
            continue;
        }
        size_t i = c->next;
        const comm_chunk *ch = &c->chunks[i];
        if (c->stage != COMM_ST_AG && c->ready[i] < ch->len)
            return wait ? KD_EINVAL : KD_OK;
        if (c->stage == COMM_ST_SEND) {
            uint32_t aux = comm_aux(COMM_PHASE_RS, 0);
            rc = c->packed ? comm_send_packed(c, aux, step, ch, comm_area(c, 0), 0)
                           : comm_send_view(c, aux, step, ch, spans);
            if (rc != KD_OK)
                return rc;
            c->next++;
            continue;
        }
        int k = c->k;
        int rs = c->stage == COMM_ST_RS;
        zmq_msg_t in;
        rc = comm_recv(c, comm_aux(rs ? COMM_PHASE_RS : COMM_PHASE_AG, k), step, ch, &in, wait);
        if (rc == COMM_PENDING)
            return KD_OK;
        if (rc != KD_OK)
            return rc;
        /* Reduce-scatter adds the partial sum in, all-gather stores the final one. */
        comm_unpack(&c->layout, (size_t)ch->off, ch->len, comm_payload(c, &in), rs);
        zmq_msg_close(&in);
        c->next++;
        /* Forward from our own copy, zero-copy as well, so that every payload still
         * queued is counted in inflight and waited for before returning. */
        uint32_t aux;
        if (rs)
            aux = k < w - 2 ? comm_aux(COMM_PHASE_RS, k + 1) : comm_aux(COMM_PHASE_AG, 0);
        else if (k < w - 2)
            aux = comm_aux(COMM_PHASE_AG, k + 1);
        else
            continue;
        /* A final value (all-gather phase) is rounded where it is kept, as it is sent. */
        int ag = (aux >> 16) == COMM_PHASE_AG;
        rc = c->packed ? comm_send_packed(c, aux, step, ch, comm_area(c, ag), ag)
                       : comm_send_view(c, aux, step, ch, spans);
        if (rc != KD_OK)
            return rc;
    }
    return wait ? comm_wait_released(c, c->timeout_ms) : KD_OK;
}

/* Room to keep one payload per chunk of a deferred swap; KD_ENOMEM. */
static int comm_reserve_held(kd_comm *c, size_t n)
{
    if (c->heldcap >= n)
        return KD_OK;
    zmq_msg_t *h = realloc(c->held, n * sizeof *h);
    if (h == NULL)
        return KD_ENOMEM;
    c->held = h;
    kd_comm_piece *p = realloc(c->peer, n * sizeof *p);
    if (p == NULL)
        return KD_ENOMEM;
    c->peer = p;
    c->heldcap = n;
    return KD_OK;
}

static int comm_begin(kd_comm *c, const kd_comm_span *spans, int nspans, uint64_t step,
                      int defer, char *err, size_t errlen)
{
    c->active = 0;
    c->defer = 0;
    comm_release_peer(c);
    if (c->world < 1)
        return kd_errf(err, errlen, KD_EINVAL, "comm: allreduce before a world was set");
    if (nspans < 1 || nspans > COMM_MAX_SPANS)
        return kd_errf(err, errlen, KD_EINVAL, "comm: %d spans", nspans);
    c->t0 = comm_now();
    c->step = step;
    c->op_rc = KD_OK;
    c->nspans = nspans;
    memcpy(c->spans, spans, (size_t)nspans * sizeof *spans);
    c->span_start[0] = 0;
    for (int i = 0; i < nspans; i++)
        c->span_start[i + 1] = c->span_start[i] + spans[i].n;
    c->layout = (comm_layout){c->spans, c->span_start, nspans};
    c->packed = comm_pack_any(&c->layout);
    c->active = 1;
    if (c->world == 1) {
        c->stage = COMM_ST_DONE;
        return KD_OK;
    }
    if (comm_plan(c, spans, nspans) != KD_OK ||
        (c->packed && !c->plan_swap &&
         comm_reserve_pack(c, 2 * c->span_start[nspans] * sizeof(float)) != KD_OK)) {
        c->active = 0;
        return kd_errf(err, errlen, KD_ENOMEM, "comm: out of memory for the chunk plan");
    }
    memset(c->ready, 0, c->nchunks * sizeof *c->ready);
    /* Without room to keep the payloads the swap adds them in, as undeferred. */
    c->defer = defer && c->plan_swap && !c->packed && comm_reserve_held(c, c->nchunks) == KD_OK;
    if (c->plan_swap) {
        c->stage = COMM_ST_SWAP;
        c->next = c->rnext = 0;
    } else {
        comm_enter(c, COMM_ST_SEND, 0);
    }
    return KD_OK;
}

int kd_comm_begin(kd_comm *c, const kd_comm_span *spans, int nspans, uint64_t step,
                  char *err, size_t errlen)
{
    return comm_begin(c, spans, nspans, step, 0, err, errlen);
}

int kd_comm_begin_deferred(kd_comm *c, const kd_comm_span *spans, int nspans, uint64_t step,
                           char *err, size_t errlen)
{
    return comm_begin(c, spans, nspans, step, 1, err, errlen);
}

/* The allreduce in progress failed with rc. */
static int comm_fail(kd_comm *c, int rc, char *err, size_t errlen)
{
    return comm_fail_op(c, "allreduce", c->step, rc, err, errlen);
}

int kd_comm_ready(kd_comm *c, int span, size_t off, size_t n, char *err, size_t errlen)
{
    if (!c->active || span < 0 || span >= c->nspans || off > c->spans[span].n ||
        n > c->spans[span].n - off)
        return kd_errf(err, errlen, KD_EINVAL, "comm: ready range outside the allreduce");
    if (c->world == 1 || c->op_rc != KD_OK)
        return c->op_rc == KD_OK ? KD_OK : comm_fail(c, c->op_rc, err, errlen);
    /* In logical offsets: a swap chunk may cover several spans. */
    uint64_t a = c->span_start[span] + off, b = a + n;
    for (size_t i = 0; i < c->nchunks; i++) {
        const comm_chunk *ch = &c->chunks[i];
        uint64_t lo = ch->off > a ? ch->off : a;
        uint64_t hi = ch->off + ch->len < b ? ch->off + ch->len : b;
        if (hi > lo)
            c->ready[i] += (size_t)(hi - lo);
    }
    c->op_rc = comm_progress(c, 0);
    return c->op_rc == KD_OK ? KD_OK : comm_fail(c, c->op_rc, err, errlen);
}

int kd_comm_finish(kd_comm *c, char *err, size_t errlen)
{
    if (!c->active)
        return kd_errf(err, errlen, KD_EINVAL, "comm: finish without begin");
    c->active = 0;
    int rc = c->op_rc;
    if (rc == KD_OK && c->world > 1)
        rc = comm_progress(c, 1);
    if (rc == KD_OK) {
        c->peer_ok = c->defer;
        c->stats.allreduces++;
        if (c->world > 1)
            c->stats.seconds += comm_now() - c->t0;
        return KD_OK;
    }
    if (rc == KD_ETIMEOUT)
        c->stats.timeouts++;
    if (rc == KD_EINVAL)
        return kd_errf(err, errlen, rc, "comm: finish before every element was marked ready");
    return comm_fail(c, rc, err, errlen);
}

int kd_comm_allreducev(kd_comm *c, const kd_comm_span *spans, int nspans, uint64_t step,
                       char *err, size_t errlen)
{
    int rc = kd_comm_begin(c, spans, nspans, step, err, errlen);
    if (rc != KD_OK)
        return rc;
    /* An error here is sticky: finish reports it. */
    for (int i = 0; i < nspans; i++)
        if (kd_comm_ready(c, i, 0, spans[i].n, err, errlen) != KD_OK)
            break;
    return kd_comm_finish(c, err, errlen);
}

int kd_comm_allreduce(kd_comm *c, float *buf, size_t n, uint64_t step, char *err,
                      size_t errlen)
{
    kd_comm_span s = {buf, n, 0};
    return kd_comm_allreducev(c, &s, 1, step, err, errlen);
}

/* The all-gather's chunk of its single span starting at off, at most chunk_elems long and
 * not past end (len 0 once off reaches end). */
static comm_chunk gather_chunk(const kd_comm *c, size_t off, size_t end)
{
    size_t len = end - off < c->chunk_elems ? end - off : c->chunk_elems;
    return (comm_chunk){0, off, len, off};
}

/* Ring step k of the all-gather: send block (r-k) chunk by chunk (zero-copy; ZeroMQ's
 * I/O thread streams it while we receive), then receive block (r-k-1) into place. */
int kd_comm_allgatherv(kd_comm *c, float *buf, const size_t *bounds, int bf16,
                       uint64_t step, char *err, size_t errlen)
{
    if (c->world < 1)
        return kd_errf(err, errlen, KD_EINVAL, "comm: all-gather before a world was set");
    if (c->active)
        return kd_errf(err, errlen, KD_EINVAL, "comm: all-gather inside an allreduce");
    comm_release_peer(c); /* the layout the pieces refer to is about to change */
    int w = c->world, r = c->rank;
    for (int i = 0; i < w; i++)
        if (bounds[i] > bounds[i + 1])
            return kd_errf(err, errlen, KD_EINVAL, "comm: all-gather bounds decrease at %d", i);
    if (w == 1)
        return KD_OK;
    double t0 = comm_now();
    kd_comm_span whole = {buf, bounds[w], bf16 ? bounds[w] : 0};
    size_t start[2] = {0, bounds[w]};
    /* The packing layout outlives no call: no allreduce is in progress (checked above). */
    c->layout = (comm_layout){&whole, start, 1};
    c->packed = bf16 && bounds[w] > 0;
    if (c->packed && comm_reserve_pack(c, bounds[w] * sizeof(float)) != KD_OK) {
        c->packed = 0;
        return kd_errf(err, errlen, KD_ENOMEM, "comm: out of memory for the all-gather");
    }
    int rc = KD_OK;
    for (int k = 0; k < w - 1 && rc == KD_OK; k++) {
        uint32_t aux = comm_aux(COMM_PHASE_GATHER, k);
        int sb = (r - k + w) % w, rb = (r - k - 1 + w) % w;
        for (comm_chunk ch = gather_chunk(c, bounds[sb], bounds[sb + 1]);
             ch.len > 0 && rc == KD_OK; ch = gather_chunk(c, ch.off + ch.len, bounds[sb + 1])) {
            /* Our own block (k = 0) is rounded where we keep it, as it is sent; a
             * forwarded one arrived as bfloat16 and holds its values already. */
            rc = c->packed ? comm_send_packed(c, aux, step, &ch, c->packbuf, k == 0)
                           : comm_send_view(c, aux, step, &ch, &whole);
        }
        for (comm_chunk ch = gather_chunk(c, bounds[rb], bounds[rb + 1]);
             ch.len > 0 && rc == KD_OK; ch = gather_chunk(c, ch.off + ch.len, bounds[rb + 1])) {
            zmq_msg_t in;
            rc = comm_recv(c, aux, step, &ch, &in, 1);
            if (rc == KD_OK) {
                comm_unpack(&c->layout, (size_t)ch.off, ch.len, comm_payload(c, &in), 0);
                zmq_msg_close(&in);
            }
        }
    }
    /* Our sends must be released before the caller reuses the buffer, even on error. */
    int rel = comm_wait_released(c, c->timeout_ms);
    c->packed = 0;
    if (rc == KD_OK)
        rc = rel;
    if (rc != KD_OK) {
        if (rc == KD_ETIMEOUT)
            c->stats.timeouts++;
        return comm_fail_op(c, "all-gather", step, rc, err, errlen);
    }
    c->stats.seconds += comm_now() - t0;
    return KD_OK;
}
