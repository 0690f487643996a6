/* The onset detector's per-hop kernel, in C (rolypoly/onsets.py describes the detector).
 *
 * At a 64-sample hop the numpy reference makes about a hundred calls per hop,
 * and the calls, not the arithmetic, cost most of the hop's budget. This file
 * does the same work in one call:
 *
 *   od_hear   one hop: the DC blocker and the bands' one-pole filters, the
 *             ring of newest audio, the frame's spectrum (a real FFT) into log
 *             band energies and their rises, the quarter-hop energies, the
 *             trace of the bands' audio, the fast trigger's envelopes and rise,
 *             and one step of the network (dense, GRU, head);
 *   od_place  where an attack the network just heard began (OnsetDetector._place).
 *
 * Every array is numpy's, allocated once by Python (OnsetKernel in onsets.py
 * mirrors the struct); the picking logic stays in Python and reads the same
 * arrays as the numpy reference does. No allocation, no locks, no I/O.
 * Sums run over four partial sums: a single chain of dependent additions
 * would make the products wait on each other.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_BANDS 8
#define MAX_SECTIONS 8
#define MAX_LAGS 4
#define MAX_FACTORS 32

typedef struct {
    /* sizes */
    int64_t hop, size, n_bins, n_spec, depth, n_lags, lags[MAX_LAGS], trace_hops, n_bands, quarter, half;
    /* DC blocker and the bands' sections: kind 0 high-pass, 1 low-pass; state per section */
    double dc_coef, dc_in, dc_out;
    int64_t n_sec[MAX_BANDS], sec_kind[MAX_BANDS * MAX_SECTIONS];
    double sec_coef[MAX_BANDS * MAX_SECTIONS], sec_in[MAX_BANDS * MAX_SECTIONS], sec_out[MAX_BANDS * MAX_SECTIONS];
    double *bands;                /* (n_bands, hop): the filters' outputs, row 0 the DC-blocked signal */
    double *ring;                 /* 2 * size: every hop written twice */
    int64_t ring_pos;
    double *window;               /* size */
    /* the real FFT of size 2M through a complex one of size M (mixed radix) */
    int64_t m, n_factors, factors[2 * MAX_FACTORS];
    double *twiddles;             /* M complex: exp(-2 pi i k / M) */
    double *post;                 /* M + 1 complex: exp(-2 pi i k / 2M) */
    double *z, *zz, *scratch;     /* M, M and max-factor complex */
    int64_t *bitrev;              /* M a power of two: the bit-reversed order; else NULL (mixed radix) */
    double *spec;                 /* n_bins complex: the newest frame's spectrum */
    int64_t *fb_start, *fb_len;   /* per spectrum band: first bin and number of bins */
    double *fb_w;                 /* their weights, band after band */
    double *history;              /* (depth, n_spec): ring of band levels */
    int64_t hist_at;
    double *features;             /* n_spec * (1 + n_lags) + n_bands * 2 * half */
    double quarter_db, level_db;
    double *trace;                /* (n_bands, trace_hops * hop) */
    int64_t trace_at;
    /* the fast trigger */
    int64_t trig_first, trig_count;   /* its bands: trig_first .. trig_first + trig_count - 1 */
    double drop, slow_coef, trig_floor_db;
    double *rows;                 /* (1 + trig_count, hop + 1): fast envelopes; bands' last column: slow carry */
    double *slow;                 /* (trig_count, hop) */
    double *rise, *previous_rise; /* hop */
    double *last;                 /* 1 + trig_count */
    double rise_max, rise_min;
    /* the network (float32, biases folded in: see OnsetNet) */
    int64_t n_in, dense, hidden;
    float *w_in, *w_gru, *w_head, *x, *v, *g, *out;   /* transposed */
    /* placing an attack */
    double *env;                  /* (n_bands, trace_hops * hop) */
    double *span;                 /* n_bands */
    double peak;
} od_state;

size_t od_state_size(void) { return sizeof(od_state); }

static const double TINY = 1e-7;

static double dot(const double *a, const double *b, int64_t n) {
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i]; s1 += a[i + 1] * b[i + 1]; s2 += a[i + 2] * b[i + 2]; s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; i++) s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

/* ---------------------------------------------------------------- FFT */

/* Complex FFT, decimation in time over the factors (kissfft's scheme): out[k] = sum_n in[n] w^(nk). */
static void fft_work(od_state *s, double *out, const double *in, int64_t stride, const int64_t *factors) {
    int64_t p = factors[0], m = factors[1], M = s->m;
    double *beg = out, *end = out + 2 * p * m;
    if (m == 1) {
        for (double *o = out; o != end; o += 2, in += 2 * stride) { o[0] = in[0]; o[1] = in[1]; }
    } else {
        for (double *o = out; o != end; o += 2 * m, in += 2 * stride)
            fft_work(s, o, in, stride * p, factors + 2);
    }
    out = beg;
    const double *tw = s->twiddles;
    if (p == 2) {
        for (int64_t u = 0; u < m; u++) {
            double *a = out + 2 * u, *b = out + 2 * (u + m);
            double wr = tw[2 * u * stride], wi = tw[2 * u * stride + 1];
            double tr = b[0] * wr - b[1] * wi, ti = b[0] * wi + b[1] * wr;
            b[0] = a[0] - tr; b[1] = a[1] - ti;
            a[0] += tr; a[1] += ti;
        }
        return;
    }
    double *scratch = s->scratch;
    for (int64_t u = 0; u < m; u++) {
        for (int64_t q = 0, k = u; q < p; q++, k += m) {
            scratch[2 * q] = out[2 * k]; scratch[2 * q + 1] = out[2 * k + 1];
        }
        for (int64_t q1 = 0, k = u; q1 < p; q1++, k += m) {
            int64_t t = 0;
            double re = scratch[0], im = scratch[1];
            for (int64_t q = 1; q < p; q++) {
                t += stride * k;
                t %= M;
                double wr = tw[2 * t], wi = tw[2 * t + 1];
                re += scratch[2 * q] * wr - scratch[2 * q + 1] * wi;
                im += scratch[2 * q] * wi + scratch[2 * q + 1] * wr;
            }
            out[2 * k] = re; out[2 * k + 1] = im;
        }
    }
}

/* The same for M a power of two: in bit-reversed order, then log2(M) stages of butterflies
 * (no recursion, the common case: 48 kHz and its multiples). */
static void fft_radix2(od_state *s, double *out, const double *in) {
    int64_t M = s->m;
    const int64_t *rev = s->bitrev;
    const double *tw = s->twiddles;
    for (int64_t n = 0; n < M; n++) { out[2 * n] = in[2 * rev[n]]; out[2 * n + 1] = in[2 * rev[n] + 1]; }
    for (int64_t half = 1, stride = M / 2; half < M; half *= 2, stride /= 2) {
        for (int64_t start = 0; start < M; start += 2 * half) {
            double *a = out + 2 * start, *b = out + 2 * (start + half);
            for (int64_t u = 0; u < half; u++) {
                double wr = tw[2 * u * stride], wi = tw[2 * u * stride + 1];
                double tr = b[2 * u] * wr - b[2 * u + 1] * wi, ti = b[2 * u] * wi + b[2 * u + 1] * wr;
                b[2 * u] = a[2 * u] - tr; b[2 * u + 1] = a[2 * u + 1] - ti;
                a[2 * u] += tr; a[2 * u + 1] += ti;
            }
        }
    }
}

/* Spectrum of the windowed frame (size 2M, real) into s->spec (M + 1 bins). */
static void real_fft(od_state *s, const double *frame) {
    int64_t M = s->m;
    const double *w = s->window;
    for (int64_t n = 0; n < M; n++) {
        s->z[2 * n] = frame[2 * n] * w[2 * n];
        s->z[2 * n + 1] = frame[2 * n + 1] * w[2 * n + 1];
    }
    if (s->bitrev) fft_radix2(s, s->zz, s->z);
    else fft_work(s, s->zz, s->z, 1, s->factors);
    const double *Z = s->zz, *post = s->post;
    double *X = s->spec;
    for (int64_t k = 0; k <= M; k++) {
        int64_t a = k == M ? 0 : k, b = k == 0 ? 0 : M - k;
        double zr = Z[2 * a], zi = Z[2 * a + 1], cr = Z[2 * b], ci = -Z[2 * b + 1];  /* Z[k], conj Z[M-k] */
        double er = 0.5 * (zr + cr), ei = 0.5 * (zi + ci);
        /* O = (Z[k] - conj Z[M-k]) / 2i */
        double dr = zr - cr, di = zi - ci;
        double or_ = 0.5 * di, oi = -0.5 * dr;
        double wr = post[2 * k], wi = post[2 * k + 1];
        X[2 * k] = er + or_ * wr - oi * wi;
        X[2 * k + 1] = ei + or_ * wi + oi * wr;
    }
}

/* ---------------------------------------------------------------- one hop */

static void filters(od_state *s, const double *x) {
    int64_t hop = s->hop;
    double *dry = s->bands;
    double c = s->dc_coef, xin = s->dc_in, y = s->dc_out;
    for (int64_t n = 0; n < hop; n++) {
        y = c * (y + x[n] - xin);
        xin = x[n];
        dry[n] = y;
    }
    s->dc_in = xin; s->dc_out = y;
    for (int64_t b = 1; b < s->n_bands; b++) {
        double *out = s->bands + b * hop;
        const double *src = dry;
        if (s->n_sec[b] == 0) { memcpy(out, dry, hop * sizeof(double)); continue; }
        for (int64_t i = 0; i < s->n_sec[b]; i++) {
            int64_t j = b * MAX_SECTIONS + i;
            double r = s->sec_coef[j], pin = s->sec_in[j], pout = s->sec_out[j];
            if (s->sec_kind[j] == 0) {
                for (int64_t n = 0; n < hop; n++) {
                    double v = src[n];
                    pout = r * (pout + v - pin);
                    pin = v;
                    out[n] = pout;
                }
            } else {
                for (int64_t n = 0; n < hop; n++) {
                    pin = src[n];
                    pout = (1.0 - r) * pin + r * pout;
                    out[n] = pout;
                }
            }
            s->sec_in[j] = pin; s->sec_out[j] = pout;
            src = out;
        }
    }
}

static void spectrum(od_state *s) {
    int64_t hop = s->hop, size = s->size, pos = s->ring_pos, nb = s->n_spec;
    memcpy(s->ring + pos, s->bands, hop * sizeof(double));
    memcpy(s->ring + size + pos, s->bands, hop * sizeof(double));
    pos = (pos + hop) % size;
    s->ring_pos = pos;
    real_fft(s, s->ring + (pos ? pos : size));
    double *level = s->features;
    const double *w = s->fb_w;
    for (int64_t b = 0; b < nb; b++) {
        const double *X = s->spec + 2 * s->fb_start[b];
        double e0 = TINY * TINY, e1 = 0;
        for (int64_t k = 0; k < s->fb_len[b]; k++) {
            e0 += w[k] * (X[2 * k] * X[2 * k]);
            e1 += w[k] * (X[2 * k + 1] * X[2 * k + 1]);
        }
        w += s->fb_len[b];
        level[b] = log10(e0 + e1);
    }
    s->hist_at = (s->hist_at + 1) % s->depth;
    memcpy(s->history + s->hist_at * nb, level, nb * sizeof(double));
    for (int64_t i = 0; i < s->n_lags; i++) {
        const double *old = s->history + ((s->hist_at - s->lags[i] + s->depth) % s->depth) * nb;
        double *out = s->features + nb * (i + 1);
        for (int64_t b = 0; b < nb; b++) out[b] = level[b] - old[b];
    }
}

static void quarters(od_state *s) {
    int64_t hop = s->hop, half = s->half, quarter = s->quarter;
    double *q = s->features + s->n_spec * (1 + s->n_lags);
    double loudest = -INFINITY;
    for (int64_t b = 0; b < s->n_bands; b++) {
        double *row = q + b * 2 * half;
        memmove(row, row + half, half * sizeof(double));
        for (int64_t j = 0; j < half; j++) {
            const double *x = s->bands + b * hop + j * quarter;
            row[half + j] = log10(TINY * TINY + dot(x, x, quarter));
        }
        if (b == 0)
            for (int64_t j = 0; j < half; j++) loudest = row[half + j] > loudest ? row[half + j] : loudest;
    }
    s->level_db = 10.0 * loudest + s->quarter_db;
    int64_t th = s->trace_hops;
    s->trace_at = (s->trace_at + 1) % th;
    for (int64_t b = 0; b < s->n_bands; b++)
        memcpy(s->trace + b * th * hop + s->trace_at * hop, s->bands + b * hop, hop * sizeof(double));
}

static void trigger(od_state *s) {
    int64_t hop = s->hop, nt = s->trig_count;
    double drop = s->drop;
    for (int64_t r = 0; r <= nt; r++) {
        const double *x = s->bands + (r == 0 ? 0 : s->trig_first + r - 1) * hop;
        double *fast = s->rows + r * (hop + 1);
        double run = s->last[r] - drop;   /* the release carried over the hop edge */
        for (int64_t n = 0; n < hop; n++) {
            double v = 20.0 * log10(fabs(x[n]) + TINY) + n * drop;
            if (v > run || n == 0) run = v > run ? v : run;
            fast[n] = run - n * drop;
        }
        s->last[r] = fast[hop - 1];
    }
    memcpy(s->previous_rise, s->rise, hop * sizeof(double));
    double c = s->slow_coef, top = -INFINITY, bottom = INFINITY;
    for (int64_t n = 0; n < hop; n++) s->rise[n] = -INFINITY;
    for (int64_t r = 1; r <= nt; r++) {
        double *fast = s->rows + r * (hop + 1), *slow = s->slow + (r - 1) * hop;
        double y = fast[hop];             /* the slow envelope's last value */
        for (int64_t n = 0; n < hop; n++) {
            y = c * y + (1.0 - c) * fast[n];
            slow[n] = y;
            /* a band with almost nothing in it flickers by many dB on noise: no say */
            double d = fast[n] < s->trig_floor_db ? 0.0 : fast[n] - y;
            if (d > s->rise[n]) s->rise[n] = d;
        }
        fast[hop] = y;
    }
    for (int64_t n = 0; n < hop; n++) {
        top = s->rise[n] > top ? s->rise[n] : top;
        bottom = s->rise[n] < bottom ? s->rise[n] : bottom;
    }
    s->rise_max = top; s->rise_min = bottom;
}

/* y = W x for W given transposed (cols x rows, row-major): a sum of columns, which the compiler
 * vectorises (no chain of dependent additions). */
static void matvec(float *y, const float *wt, const float *x, int64_t rows, int64_t cols) {
    for (int64_t i = 0; i < rows; i++) y[i] = 0.0f;
    for (int64_t j = 0; j < cols; j++) {
        const float *w = wt + j * rows;
        float xj = x[j];
        if (xj == 0.0f) continue;       /* ReLU zeros and an empty history: nothing to add */
        for (int64_t i = 0; i < rows; i++) y[i] += w[i] * xj;
    }
}

static void network(od_state *s) {
    int64_t n_in = s->n_in, dense = s->dense, H = s->hidden, nv = dense + 1 + H + 1;
    for (int64_t i = 0; i < n_in; i++) s->x[i] = (float)s->features[i];
    float *a = s->v;
    matvec(a, s->w_in, s->x, dense + 1, n_in + 1);
    for (int64_t i = 0; i <= dense; i++) a[i] = a[i] > 0.0f ? a[i] : 0.0f;
    float *g = s->g, *h = s->v + dense + 1;
    matvec(g, s->w_gru, s->v, 4 * H, nv);
    for (int64_t i = 0; i < 2 * H; i++) g[i] = (tanhf(g[i]) + 1.0f) * 0.5f;     /* r, z */
    for (int64_t i = 0; i < H; i++) {
        float n = tanhf(g[2 * H + i] + g[i] * g[3 * H + i]);
        h[i] = n + g[H + i] * (h[i] - n);
    }
    matvec(s->out, s->w_head, h, 2, H + 1);
}

/* One hop of audio (hop samples, sanitised in place: NaN -> 0, +-inf -> +-1). */
void od_hear(od_state *s, double *x) {
    double peak = 0.0;
    int finite = 1;
    for (int64_t n = 0; n < s->hop; n++) {
        if (!isfinite(x[n])) finite = 0;
        else if (fabs(x[n]) > peak) peak = fabs(x[n]);
    }
    if (!finite) {
        /* A NaN would poison the filter state for good: treat it as a dropout. */
        peak = 0.0;
        for (int64_t n = 0; n < s->hop; n++) {
            if (isnan(x[n])) x[n] = 0.0;
            else if (isinf(x[n])) x[n] = x[n] > 0 ? 1.0 : -1.0;
            if (fabs(x[n]) > peak) peak = fabs(x[n]);
        }
    }
    s->peak = peak;
    filters(s, x);
    spectrum(s);
    quarters(s);
    trigger(s);
    network(s);
}

/* Where the attack just decided began (stream index, see OnsetDetector._place); *agreeing: bands
 * that rose clearly; s->span: each band's rise. */
int64_t od_place(od_state *s, double ago, int64_t position, int64_t *agreeing) {
    int64_t hop = s->hop, th = s->trace_hops, length = th * hop, end = position + hop;
    int64_t at = (s->trace_at + 1) * hop % length;
    if (ago < 0.0) ago = 0.0;
    if (ago > th - 1) ago = (double)(th - 1);
    int64_t guess = end - (int64_t)nearbyint((ago + 0.5) * hop);
    int64_t start = length - (int64_t)nearbyint((ago + 2.0) * hop);
    if (start < 0) start = 0;
    int64_t first = length, second = length;
    *agreeing = 0;
    for (int64_t b = 0; b < s->n_bands; b++) {
        const double *trace = s->trace + b * length;
        double *env = s->env + b * length;
        double run = -INFINITY;
        for (int64_t n = 0; n < length; n++) {
            double v = 20.0 * log10(fabs(trace[(at + n) % length]) + TINY) + n * s->drop;
            run = v > run ? v : run;
            env[n] = run - n * s->drop;
        }
        double base = env[start], top = env[start];
        int64_t peak = 0;
        for (int64_t n = start; n < length; n++)
            if (env[n] > top) { top = env[n]; peak = n - start; }
        s->span[b] = top - base;
        base += 3.0;                       /* _ATTACK_START_DB */
        if (s->span[b] < 6.0) continue;    /* _ATTACK_RISE_DB */
        int64_t n = start + peak;
        while (n >= start && !(env[n] < base)) n--;
        if (n < start) continue;
        int64_t a = n + 1;
        *agreeing += 1;
        if (a < first) { second = first; first = a; }
        else if (a < second) second = a;
    }
    int64_t best = second < length ? second : first;
    int64_t result = best == length ? guess : end - length + best;
    return result > 0 ? result : 0;
}
