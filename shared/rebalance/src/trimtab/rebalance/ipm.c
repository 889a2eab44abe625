/* Structure-exploiting primal-dual interior point for Trimtab's rebalancing problem.
 *
 * Reformulation: trade t = buy - S sell is eliminated; impact |t|^1.5 is split into
 * buy^1.5 + (sum of the security's sells)^1.5 (exact when a security is never bought and sold
 * at once); variables with a zero cap are removed; excess variables whose band can never bind,
 * rows that can never bind (tax, gain, turnover) and groups without live members are removed.
 *
 *   min f(x)  s.t.  0 <= x <= u,  A x <= r
 *
 * x: one block per security (its live sells, buy, excess), then idle and group excesses.
 * Newton matrix H = B + U U^T with B block diagonal (bounds, impact, quad_diag, band rows)
 * and U = [factor columns, drag + group rows (t-space: sigma_i * V_i per block), tax/gain/
 * floor/turnover rows (general)]: solved by Woodbury with an R x R capacitance matrix.
 * Mehrotra predictor-corrector, one step length for all variables.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
static int ipm_verbose = 0;
static int recover_mode = 1;
static double reftol = 1e-10;
static double refmu = 1e-2;
static double z0fac = 0.3;

#define SCALE 1e4
#define FMAX(a, b) ((a) > (b) ? (a) : (b))
#define BIG 1e300

typedef struct {
    int n, k, f, G, m;
    /* blocks */
    int nb, nxb, nx, ngu, NG, NT, RT, R, mrows, nub;
    int *bsec, *bp, *bns, *bhasb, *bhase, *boff, *bhoff;
    int *slot;        /* per block var: slot index (sells), -1 else */
    double *sig, *c, *ub; int *hasub; int *ubidx;
    int *gmap;        /* used group -> group index */
    /* rows CSR */
    int *rp_, *ci; double *cv; double *rhs;
    /* gen rows dense over block vars */
    double *aG;       /* NG x nxb */
    /* t-space rows: coef per block (times sigma) */
    double *hT;       /* NT x nb */
    int *gT;          /* global var index (x index) of each t-space row */
    int *fcol;        /* used factor columns */
    int nf;
    double *Fb;       /* nb x nf: factor loadings of each block's security */
    double *qd, *ql2, *imp; /* per block: S*quad_diag, S*(quad_lin + 2 F o) , S*impact */
    double *fo;       /* nf: factor offsets */
    int *bandrow;     /* per block: index of its band lo row (hi = +1), -1 if none */
    double cscale, constant;
} Prob;

static void *arena_alloc(char **a, size_t bytes) {
    void *p = *a; *a += (bytes + 15) & ~(size_t)15; return p;
}

/* small dense Cholesky (row-major p x p, lower), 1/diag kept in dinv; returns 0 on failure */
static int chol(double *L, int p, double *dinv) {
    for (int j = 0; j < p; j++) {
        double s = L[j * p + j];
        for (int q = 0; q < j; q++) s -= L[j * p + q] * L[j * p + q];
        if (!(s > 0)) return 0;
        s = sqrt(s); L[j * p + j] = s;
        double inv = 1.0 / s;
        dinv[j] = inv;
        for (int i = j + 1; i < p; i++) {
            double t = L[i * p + j];
            for (int q = 0; q < j; q++) t -= L[i * p + q] * L[j * p + q];
            L[i * p + j] = t * inv;
        }
    }
    return 1;
}
static void cholsolve(const double *L, int p, const double *dinv, double *b) {
    for (int i = 0; i < p; i++) {
        double t = b[i];
        for (int q = 0; q < i; q++) t -= L[i * p + q] * b[q];
        b[i] = t * dinv[i];
    }
    for (int i = p - 1; i >= 0; i--) {   /* row-oriented: axpy with row i of L */
        double t = b[i] * dinv[i];
        b[i] = t;
        const double *Li = L + i * p;
        for (int q = 0; q < i; q++) b[q] -= Li[q] * t;
    }
}
/* in-place inverse of a small SPD matrix (Cholesky, then L^-T L^-1); fixed-size copies for the
 * compiler to unroll */
#define DEF_INV(NAME, PP)                                                                      \
static int NAME(double *A, int p_) {                                                          \
    const int p = PP > 0 ? PP : p_;                                                           \
    double L[100], d[10], Li[100];                                                            \
    for (int i = 0; i < p * p; i++) L[i] = A[i];                                              \
    if (!chol(L, p, d)) return 0;                                                             \
    for (int j = 0; j < p; j++) {                                                             \
        for (int i = 0; i < j; i++) Li[i * p + j] = 0;                                        \
        Li[j * p + j] = d[j];                                                                 \
        for (int i = j + 1; i < p; i++) {                                                     \
            double t = 0;                                                                     \
            for (int q = j; q < i; q++) t -= L[i * p + q] * Li[q * p + j];                    \
            Li[i * p + j] = t * d[i];                                                         \
        }                                                                                     \
    }                                                                                         \
    for (int i = 0; i < p; i++) for (int j = 0; j <= i; j++) {                                \
        double t = 0;                                                                         \
        for (int q = i; q < p; q++) t += Li[q * p + i] * Li[q * p + j];                       \
        A[i * p + j] = t; A[j * p + i] = t;                                                   \
    }                                                                                         \
    return 1;                                                                                 \
}
DEF_INV(inv1, 1) DEF_INV(inv2, 2) DEF_INV(inv3, 3) DEF_INV(inv4, 4) DEF_INV(inv5, 5) DEF_INV(inv6, 6)
DEF_INV(invn, 0)
static int spd_inverse(double *A, int p) {
    switch (p) {
    case 1: return inv1(A, 1); case 2: return inv2(A, 2); case 3: return inv3(A, 3);
    case 4: return inv4(A, 4); case 5: return inv5(A, 5); case 6: return inv6(A, 6);
    default: return invn(A, p);
    }
}
#define DEF_SYMV(NAME, PP)                                                                     \
static inline void NAME(const double *A, int p_, const double *x, double *y) {                \
    const int p = PP > 0 ? PP : p_;                                                           \
    for (int i = 0; i < p; i++) {                                                             \
        double t = 0;                                                                         \
        for (int j = 0; j < p; j++) t += A[i * p + j] * x[j];                                 \
        y[i] = t;                                                                             \
    }                                                                                         \
}
DEF_SYMV(symv1, 1) DEF_SYMV(symv2, 2) DEF_SYMV(symv3, 3) DEF_SYMV(symv4, 4) DEF_SYMV(symv5, 5)
DEF_SYMV(symv6, 6) DEF_SYMV(symvn, 0)
static inline void symv(const double *A, int p, const double *x, double *y) {
    switch (p) {
    case 1: symv1(A, 1, x, y); return; case 2: symv2(A, 2, x, y); return; case 3: symv3(A, 3, x, y); return;
    case 4: symv4(A, 4, x, y); return; case 5: symv5(A, 5, x, y); return; case 6: symv6(A, 6, x, y); return;
    default: symvn(A, p, x, y);
    }
}

/* y = H^-1 r (Woodbury): H = B + U C U', K = C^-1 + U' B^-1 U factored */
static void hsolve(const Prob *P, const double *Hb, const double *K, const double *Kd, const double *V, const double *beta,
                   const double *Gam, const double *r, double *y, double *qv) {
    int nb = P->nb, nxb = P->nxb, RT = P->RT, NG = P->NG, R = P->R;
    memcpy(y, r, sizeof(double) * nxb);
    for (int q = 0; q < R; q++) qv[q] = 0;
    for (int b = 0; b < nb; b++) {
        int p = P->bp[b], o = P->boff[b];
        { double tmp_[16]; for (int i2 = 0; i2 < p; i2++) tmp_[i2] = y[o + i2]; symv(Hb + P->bhoff[b], p, tmp_, y + o); }
        double sy = 0;
        for (int i2 = 0; i2 < p; i2++) sy += P->sig[o + i2] * y[o + i2];
        const double *Vb = V + (size_t)b * RT;
        for (int q = 0; q < RT; q++) qv[q] += Vb[q] * sy;
        for (int q = 0; q < NG; q++) {
            double s = 0;
            for (int i2 = 0; i2 < p; i2++) s += P->aG[q * nxb + o + i2] * y[o + i2];
            qv[RT + q] += s;
        }
    }
    cholsolve(K, R, Kd, qv);
    if (recover_mode == 0) {
        for (int b = 0; b < nb; b++) {
            int p = P->bp[b], o = P->boff[b];
            const double *Vb = V + (size_t)b * RT;
            double vt = 0;
            for (int q = 0; q < RT; q++) vt += Vb[q] * qv[q];
            for (int i2 = 0; i2 < p; i2++) {
                double s = beta[o + i2] * vt;
                for (int q = 0; q < NG; q++) s += Gam[(size_t)(o + i2) * NG + q] * qv[RT + q];
                y[o + i2] -= s;
            }
        }
    } else {  /* y = B^-1 (r - U p) */
        for (int b = 0; b < nb; b++) {
            int p = P->bp[b], o = P->boff[b];
            const double *Vb = V + (size_t)b * RT;
            double vt = 0;
            for (int q = 0; q < RT; q++) vt += Vb[q] * qv[q];
            for (int i2 = 0; i2 < p; i2++) {
                double s = P->sig[o + i2] * vt;
                for (int q = 0; q < NG; q++) s += P->aG[q * nxb + o + i2] * qv[RT + q];
                y[o + i2] = r[o + i2] - s;
            }
            { double tmp_[16]; for (int i2 = 0; i2 < p; i2++) tmp_[i2] = y[o + i2]; symv(Hb + P->bhoff[b], p, tmp_, y + o); }
        }
    }
}

/* out = H x, with B unfactored (Bc) */
static void hmul(const Prob *P, const double *Bc, const double *V, const double *Cd,
                 const double *x, double *out, double *qv) {
    int nb = P->nb, nxb = P->nxb, RT = P->RT, NG = P->NG, R = P->R;
    for (int q = 0; q < R; q++) qv[q] = 0;
    for (int b = 0; b < nb; b++) {
        int p = P->bp[b], o = P->boff[b];
        const double *B = Bc + P->bhoff[b];
        double sy = 0;
        for (int i2 = 0; i2 < p; i2++) {
            double s = 0;
            for (int j2 = 0; j2 < p; j2++) s += B[i2 * p + j2] * x[o + j2];
            out[o + i2] = s;
            sy += P->sig[o + i2] * x[o + i2];
        }
        const double *Vb = V + (size_t)b * RT;
        for (int q = 0; q < RT; q++) qv[q] += Vb[q] * sy;
        for (int q = 0; q < NG; q++) {
            double s = 0;
            for (int i2 = 0; i2 < p; i2++) s += P->aG[q * nxb + o + i2] * x[o + i2];
            qv[RT + q] += s;
        }
    }
    for (int q = 0; q < R; q++) qv[q] *= Cd[q];
    for (int b = 0; b < nb; b++) {
        int p = P->bp[b], o = P->boff[b];
        const double *Vb = V + (size_t)b * RT;
        double vt = 0;
        for (int q = 0; q < RT; q++) vt += Vb[q] * qv[q];
        for (int i2 = 0; i2 < p; i2++) {
            double s = P->sig[o + i2] * vt;
            for (int q = 0; q < NG; q++) s += P->aG[q * nxb + o + i2] * qv[RT + q];
            out[o + i2] += s;
        }
    }
}

/* packed input layout (doubles) */
typedef struct {
    const double *quad_diag, *quad_lin, *band_lo, *band_hi, *lin_sell, *lin_buy, *cost_buy, *cost_sell,
        *sell_cap, *buy_cap, *impact, *tax_row, *gain_row, *factor_scale, *factor_offset, *group_member,
        *group_lo, *group_hi;
    double band_weight, cash_weight, cash_drag_rhs, cash_floor_rhs, turnover_cap, tax_cap, gain_cap;
} Data;

static void unpack(const double *buf, int n, int k, int f, int G, Data *d) {
    int m = n * k;
    const double *p = buf;
#define TAKE(name, len) d->name = p; p += (len);
    TAKE(quad_diag, n) TAKE(quad_lin, n) TAKE(band_lo, n) TAKE(band_hi, n) TAKE(lin_sell, m)
    TAKE(lin_buy, n) TAKE(cost_buy, n) TAKE(cost_sell, m) TAKE(sell_cap, m) TAKE(buy_cap, n)
    TAKE(impact, n) TAKE(tax_row, m) TAKE(gain_row, m) TAKE(factor_scale, n * f) TAKE(factor_offset, f)
    TAKE(group_member, n * G) TAKE(group_lo, G) TAKE(group_hi, G)
#undef TAKE
    d->band_weight = p[0]; d->cash_weight = p[1]; d->cash_drag_rhs = p[2]; d->cash_floor_rhs = p[3];
    d->turnover_cap = p[4]; d->tax_cap = p[5]; d->gain_cap = p[6];
}

/* info: [0] iterations, [1] objective (unscaled, without eliminated constants), [2] pinf,
 * [3] dinf, [4] gap, [5] nx, [6] rows, [7] R */
int ipm_solve(int n, int k, int f, int G, const double *buf, double *buy, double *sell, double *info,
              int max_iter, double tol, double dtol, double frac, double x0, int nref, int dualcorr) {
    Data D; unpack(buf, n, k, f, G, &D);
    Prob P; memset(&P, 0, sizeof P);
    int m = n * k;
    P.n = n; P.k = k; P.f = f; P.G = G; P.m = m;
    /* ---------- sizes (upper bounds) ---------- */
    size_t maxnx = (size_t)m + 2 * n + 1 + G, maxrows = 4 + 1 + 2 * G + 2 * n;
    size_t maxR = f + 1 + 2 * G + 4;
    size_t maxnnz = 4 * (size_t)m + 4 * n + 2 * (n + 1) + 2 * G * (m + n + 1) + 6 * m + 6 * n + 16;
    size_t kb = k + 2;
    size_t bytes = 0;
    bytes += 16 * (sizeof(int) * (7 * n + 8) + 8);
    bytes += 16 * (maxnx * (3 * sizeof(double) + 3 * sizeof(int)) + 64);
    bytes += 16 * (maxrows * (sizeof(int) + sizeof(double)) + maxnnz * (sizeof(int) + sizeof(double)) + 64);
    bytes += 16 * (4 * maxnx * sizeof(double) + (1 + 2 * G) * (n + 2) * sizeof(double) + n * (f + 1) * sizeof(double) + 64);
    bytes += 16 * (n * 8 * sizeof(double) + G * sizeof(int) + f * sizeof(int) + 64);
    /* iterate storage */
    bytes += 56 * (maxnx + maxrows) + n * kb * kb * sizeof(double) * sizeof(double) + n * kb * kb * sizeof(double) + maxR * maxR * sizeof(double)
             + maxnx * (maxR + 2) * sizeof(double) + n * maxR * sizeof(double) + 64 * 64;
    /* workspace reused across calls (per thread): no malloc/mmap per solve */
    static __thread char *ws = 0; static __thread size_t wsz = 0;
    if (bytes > wsz) { free(ws); ws = malloc(bytes); wsz = ws ? bytes : 0; if (!ws) return -10; }
    char *mem = ws, *a = mem;
#define AL(type, cnt) (type *)arena_alloc(&a, sizeof(type) * (size_t)(cnt))
    P.bsec = AL(int, n); P.bp = AL(int, n); P.bns = AL(int, n); P.bhasb = AL(int, n); P.bhase = AL(int, n);
    P.boff = AL(int, n + 1); P.bhoff = AL(int, n + 1); P.bandrow = AL(int, n);
    P.slot = AL(int, maxnx); P.sig = AL(double, maxnx); P.c = AL(double, maxnx); P.ub = AL(double, maxnx);
    P.hasub = AL(int, maxnx); P.ubidx = AL(int, maxnx);
    P.gmap = AL(int, G + 1); P.fcol = AL(int, f + 1);
    /* ---------- blocks ---------- */
    int nb = 0, nxb = 0, hoff = 0;
    for (int i = 0; i < n; i++) {
        int ns = 0; double scs = 0;
        for (int j = 0; j < k; j++) if (D.sell_cap[i * k + j] > 0) { ns++; scs += D.sell_cap[i * k + j]; }
        int hb = D.buy_cap[i] > 0;
        if (!ns && !hb) continue;
        int he = (D.band_lo[i] + (hb ? D.buy_cap[i] : 0) > 0) || (D.band_hi[i] + scs > 0);
        P.bsec[nb] = i; P.bns[nb] = ns; P.bhasb[nb] = hb; P.bhase[nb] = he;
        int p = ns + hb + he; P.bp[nb] = p; P.boff[nb] = nxb; P.bhoff[nb] = hoff;
        for (int j = 0; j < k; j++) if (D.sell_cap[i * k + j] > 0) {
            int s = i * k + j;
            P.slot[nxb] = s; P.sig[nxb] = -1; P.c[nxb] = SCALE * D.lin_sell[s]; P.ub[nxb] = D.sell_cap[s]; P.hasub[nxb] = 1; nxb++;
        }
        if (hb) { P.slot[nxb] = -1; P.sig[nxb] = 1; P.c[nxb] = SCALE * D.lin_buy[i]; P.ub[nxb] = D.buy_cap[i]; P.hasub[nxb] = 1; nxb++; }
        if (he) { P.slot[nxb] = -2; P.sig[nxb] = 0; P.c[nxb] = SCALE * D.band_weight; P.ub[nxb] = BIG; P.hasub[nxb] = 0; nxb++; }
        hoff += p * p; nb++;
    }
    P.boff[nb] = nxb; P.bhoff[nb] = hoff;
    P.nb = nb; P.nxb = nxb;
    /* globals: idle, used groups */
    int idle = nxb, nx = nxb + 1;
    P.slot[idle] = -3; P.sig[idle] = 0; P.c[idle] = SCALE * D.cash_weight; P.ub[idle] = BIG; P.hasub[idle] = 0;
    int ngu = 0;
    for (int g = 0; g < G; g++) {
        int used = 0;
        for (int b = 0; b < nb; b++) if (D.group_member[P.bsec[b] * G + g] != 0) { used = 1; break; }
        if (!used) continue;
        P.gmap[ngu++] = g;
        P.slot[nx] = -4; P.sig[nx] = 0; P.c[nx] = SCALE * D.band_weight; P.ub[nx] = BIG; P.hasub[nx] = 0; nx++;
    }
    P.ngu = ngu; P.nx = nx;
    int nub = 0;
    for (int j = 0; j < nx; j++) if (P.hasub[j]) P.ubidx[nub++] = j;
    P.nub = nub;
    /* factors in use */
    int nf = 0;
    for (int c = 0; c < f; c++) {
        int used = 0;
        for (int b = 0; b < nb; b++) if (D.factor_scale[P.bsec[b] * f + c] != 0) { used = 1; break; }
        if (used) P.fcol[nf++] = c;
    }
    P.nf = nf;
    P.Fb = AL(double, nb * (nf + 1)); P.qd = AL(double, nb); P.ql2 = AL(double, nb); P.imp = AL(double, nb);
    P.fo = AL(double, nf + 1);
    P.constant = 0;
    for (int c = 0; c < f; c++) P.constant += D.factor_offset[c] * D.factor_offset[c];
    P.constant *= SCALE;
    for (int c = 0; c < nf; c++) P.fo[c] = D.factor_offset[P.fcol[c]];
    for (int b = 0; b < nb; b++) {
        int i = P.bsec[b];
        double s = D.quad_lin[i];
        for (int c = 0; c < nf; c++) {
            P.Fb[b * nf + c] = D.factor_scale[i * f + P.fcol[c]];
            s += 2 * P.Fb[b * nf + c] * P.fo[c];
        }
        P.qd[b] = SCALE * D.quad_diag[i]; P.ql2[b] = SCALE * s; P.imp[b] = SCALE * D.impact[i];
    }
    /* ---------- rows ---------- */
    P.aG = AL(double, 4 * nxb + 1);
    double rG[4]; int NG = 0;
    {   /* tax, gain */
        const double *rows[2] = {D.tax_row, D.gain_row}; double caps[2] = {D.tax_cap, D.gain_cap};
        for (int q = 0; q < 2; q++) {
            double mx = 0;
            for (int j = 0; j < nxb; j++) if (P.slot[j] >= 0) { double v = rows[q][P.slot[j]]; if (v > 0) mx += v * P.ub[j]; }
            if (mx <= caps[q]) continue;
            double *r = P.aG + NG * nxb;
            for (int j = 0; j < nxb; j++) r[j] = P.slot[j] >= 0 ? rows[q][P.slot[j]] : 0;
            rG[NG++] = caps[q];
        }
        /* cash floor: sum t + cost */
        double *r = P.aG + NG * nxb;
        for (int b = 0; b < nb; b++) {
            int i = P.bsec[b];
            for (int j = P.boff[b]; j < P.boff[b + 1]; j++) {
                r[j] = P.sig[j];
                if (P.slot[j] >= 0) r[j] += D.cost_sell[P.slot[j]];
                else if (P.slot[j] == -1) r[j] += D.cost_buy[i];
            }
        }
        rG[NG++] = D.cash_floor_rhs;
        /* turnover */
        double tot = 0;
        for (int j = 0; j < nxb; j++) if (P.slot[j] >= -1) tot += P.ub[j];
        if (tot > D.turnover_cap) {
            r = P.aG + NG * nxb;
            for (int j = 0; j < nxb; j++) r[j] = P.slot[j] >= -1 ? 1 : 0;
            rG[NG++] = D.turnover_cap;
        }
    }
    P.NG = NG;
    int NT = 1 + 2 * ngu;
    P.NT = NT;
    P.hT = AL(double, NT * nb + 1); P.gT = AL(int, NT);
    double rT[1 + 2 * 64];
    if (ngu > 64) return -11;
    for (int b = 0; b < nb; b++) P.hT[b] = -1;  /* drag: -idle - sum t <= -rhs */
    P.gT[0] = idle; rT[0] = -D.cash_drag_rhs;
    for (int q = 0; q < ngu; q++) {
        int g = P.gmap[q];
        for (int b = 0; b < nb; b++) {
            double mem_ = D.group_member[P.bsec[b] * G + g];
            P.hT[(1 + 2 * q) * nb + b] = mem_;      /* G't - gx <= -lo */
            P.hT[(2 + 2 * q) * nb + b] = -mem_;     /* -G't - gx <= -hi */
        }
        P.gT[1 + 2 * q] = nxb + 1 + q; rT[1 + 2 * q] = -D.group_lo[g];
        P.gT[2 + 2 * q] = nxb + 1 + q; rT[2 + 2 * q] = -D.group_hi[g];
    }
    int nband = 0;
    for (int b = 0; b < nb; b++) if (P.bhase[b]) { P.bandrow[b] = NG + NT + 2 * nband; nband++; } else P.bandrow[b] = -1;
    int mr = NG + NT + 2 * nband;
    P.mrows = mr;
    /* CSR of all rows */
    P.rp_ = AL(int, mr + 1); P.rhs = AL(double, mr);
    size_t nnz = (size_t)NG * nxb + (size_t)NT * (nxb + 1) + 2 * (size_t)nband * (kb + 1);
    P.ci = AL(int, nnz + 1); P.cv = AL(double, nnz + 1);
    {
        int at = 0, row = 0;
        for (int q = 0; q < NG; q++) {
            P.rp_[row] = at;
            for (int j = 0; j < nxb; j++) { double v = P.aG[q * nxb + j]; if (v != 0) { P.ci[at] = j; P.cv[at++] = v; } }
            P.rhs[row++] = rG[q];
        }
        for (int q = 0; q < NT; q++) {
            P.rp_[row] = at;
            for (int b = 0; b < nb; b++) {
                double h = P.hT[q * nb + b];
                if (h == 0) continue;
                for (int j = P.boff[b]; j < P.boff[b + 1]; j++) if (P.sig[j] != 0) { P.ci[at] = j; P.cv[at++] = h * P.sig[j]; }
            }
            P.ci[at] = P.gT[q]; P.cv[at++] = -1;
            P.rhs[row++] = rT[q];
        }
        for (int b = 0; b < nb; b++) if (P.bhase[b]) {
            int i = P.bsec[b], e = P.boff[b + 1] - 1;
            for (int sgn = 1; sgn >= -1; sgn -= 2) {  /* lo: t - e <= -lo ; hi: -t - e <= -hi */
                P.rp_[row] = at;
                for (int j = P.boff[b]; j < e; j++) { P.ci[at] = j; P.cv[at++] = sgn * P.sig[j]; }
                P.ci[at] = e; P.cv[at++] = -1;
                P.rhs[row++] = sgn == 1 ? -D.band_lo[i] : -D.band_hi[i];
            }
        }
        P.rp_[row] = at;
    }
    int NGL = 1 + ngu, RT = nf + NGL, R = RT + NG;
    P.RT = RT; P.R = R;
    double cmax = 0;
    for (int j = 0; j < nx; j++) if (fabs(P.c[j]) > cmax) cmax = fabs(P.c[j]);
    for (int b = 0; b < nb; b++) if (fabs(P.ql2[b]) > cmax) cmax = fabs(P.ql2[b]);
    P.cscale = 1 + cmax;

    /* ---------- iterate storage ---------- */
    double *x = AL(double, nx), *v = AL(double, nub + 1), *w = AL(double, mr), *zl = AL(double, nx),
           *zu = AL(double, nub + 1), *z = AL(double, mr);
    double *g = AL(double, nx), *rd = AL(double, nx), *rpv = AL(double, mr), *ru = AL(double, nub + 1);
    double *Dx = AL(double, nx), *dd = AL(double, mr);
    double *Hb = AL(double, hoff + 1), *beta = AL(double, nxb + 1), *Gam = AL(double, (size_t)nxb * NG + 1);
    double *V = AL(double, (size_t)nb * RT + 1), *K = AL(double, R * R + 1);
    double *rhsv = AL(double, nx), *tmp = AL(double, mr + nx), *qv = AL(double, R + 1);
    double *t = AL(double, nb + 1), *Ft = AL(double, nf + 1), *tg = AL(double, nb + 1);
    double *ssum = AL(double, nb + 1);
    double *Bc = AL(double, hoff + 1), *res = AL(double, nx);
    double *xa = AL(double, nx);
    double *Kd = AL(double, R + 1), *Cd = AL(double, R + 1), *gD = AL(double, NGL + 1), *gk = AL(double, NGL + 1);
    /* two direction sets */
    double *dx = AL(double, nx), *dv = AL(double, nub + 1), *dw = AL(double, mr), *dzl = AL(double, nx),
           *dzu = AL(double, nub + 1), *dz = AL(double, mr);
    double *rcl = AL(double, nx), *rcu = AL(double, nub + 1), *rcw = AL(double, mr);
#undef AL
    /* ---------- initial point ---------- */
    for (int j = 0; j < nx; j++) x[j] = P.hasub[j] ? fmin(0.5 * P.ub[j], x0) : x0;
    for (int q = 0; q < nub; q++) v[q] = P.ub[P.ubidx[q]] - x[P.ubidx[q]];
    for (int r = 0; r < mr; r++) {
        double s = 0;
        for (int e = P.rp_[r]; e < P.rp_[r + 1]; e++) s += P.cv[e] * x[P.ci[e]];
        w[r] = fmax(P.rhs[r] - s, x0);
    }
    int status = 1, it = 0, have_almost = 0;
    double fval = 0, pinf = 0, dinf = 0, gap = 0;
    int ncomp = nx + nub + mr;
    for (it = 0; it <= max_iter; it++) {
        /* t, F't + o, gradient, objective */
        for (int q = 0; q < nf; q++) Ft[q] = P.fo[q];
        fval = 0;
        for (int b = 0; b < nb; b++) {
            double tt = 0, ss = 0;
            for (int j = P.boff[b]; j < P.boff[b + 1]; j++) { tt += P.sig[j] * x[j]; if (P.sig[j] < 0) ss += x[j]; }
            t[b] = tt; ssum[b] = ss;
            for (int q = 0; q < nf; q++) Ft[q] += P.Fb[b * nf + q] * tt;
        }
        for (int q = 0; q < nf; q++) fval += SCALE * Ft[q] * Ft[q];
        for (int b = 0; b < nb; b++) {
            double s2 = 0;
            for (int q = 0; q < nf; q++) s2 += P.Fb[b * nf + q] * (Ft[q] - P.fo[q]);
            /* d/dt of S(q t^2 + ql t + ||F't + o||^2); ql2 already holds S(ql + 2 F o) */
            tg[b] = 2 * P.qd[b] * t[b] + P.ql2[b] + 2 * SCALE * s2;
            fval += P.qd[b] * t[b] * t[b] + (P.ql2[b] - 2 * SCALE * 0) * t[b];
        }
        /* the ql2 term double counts 2 F o t: fix objective value exactly */
        {
            double corr = 0;
            for (int b = 0; b < nb; b++) {
                double s = 0;
                for (int q = 0; q < nf; q++) s += 2 * P.Fb[b * nf + q] * P.fo[q];
                corr += SCALE * s * t[b];
            }
            fval -= corr;
        }
        for (int j = 0; j < nx; j++) { g[j] = P.c[j]; fval += P.c[j] * x[j]; }
        for (int b = 0; b < nb; b++) {
            for (int j = P.boff[b]; j < P.boff[b + 1]; j++) g[j] += P.sig[j] * tg[b];
            if (P.imp[b] > 0) {
                if (P.bns[b]) {
                    double sq = sqrt(ssum[b]);
                    fval += P.imp[b] * ssum[b] * sq;
                    for (int j = P.boff[b]; j < P.boff[b] + P.bns[b]; j++) g[j] += 1.5 * P.imp[b] * sq;
                }
                if (P.bhasb[b]) {
                    int j = P.boff[b] + P.bns[b];
                    double sq = sqrt(x[j]);
                    fval += P.imp[b] * x[j] * sq;
                    g[j] += 1.5 * P.imp[b] * sq;
                }
            }
        }
        /* residuals */
        double mu = 0;
        for (int j = 0; j < nx; j++) { rd[j] = g[j] - zl[j] * (it == 0 ? 0 : 1); }
        if (it == 0) {
            double gm = 1;
            for (int j = 0; j < nx; j++) if (fabs(g[j]) > gm) gm = fabs(g[j]);
            gm *= z0fac;
            for (int j = 0; j < nx; j++) zl[j] = gm;
            for (int q = 0; q < nub; q++) zu[q] = gm;
            for (int r = 0; r < mr; r++) z[r] = gm;
            for (int j = 0; j < nx; j++) rd[j] = g[j] - zl[j];
        }
        for (int q = 0; q < nub; q++) rd[P.ubidx[q]] += zu[q];
        pinf = 0;
        for (int r = 0; r < mr; r++) {
            double s = 0;
            for (int e = P.rp_[r]; e < P.rp_[r + 1]; e++) { s += P.cv[e] * x[P.ci[e]]; rd[P.ci[e]] += P.cv[e] * z[r]; }
            rpv[r] = s + w[r] - P.rhs[r];
            if (fabs(rpv[r]) > pinf) pinf = fabs(rpv[r]);
            mu += w[r] * z[r];
        }
        for (int q = 0; q < nub; q++) {
            ru[q] = x[P.ubidx[q]] + v[q] - P.ub[P.ubidx[q]];
            if (fabs(ru[q]) > pinf) pinf = fabs(ru[q]);
            mu += v[q] * zu[q];
        }
        for (int j = 0; j < nx; j++) mu += x[j] * zl[j];
        gap = mu;
        mu /= ncomp;
        dinf = 0;
        for (int j = 0; j < nx; j++) if (fabs(rd[j]) > dinf) dinf = fabs(rd[j]);
        double ftrue = fval;
        if (ipm_verbose) fprintf(stderr, "%2d mu %.2e pinf %.2e dinf %.2e f %.10e\n", it, mu, pinf, dinf, fval);
        if (!isfinite(mu) || !isfinite(dinf) || !isfinite(fval)) { status = -1; break; }
        if (pinf < tol && dinf < dtol * P.cscale && gap < tol * fmax(1.0, fabs(ftrue))) { status = 0; break; }
        /* reduced tolerances (x100), like Clarabel's AlmostSolved: remembered in case of a stall */
        int almost = pinf < 100 * tol && dinf < 100 * dtol * P.cscale && gap < 100 * tol * fmax(1.0, fabs(ftrue));
        if (almost) { memcpy(xa, x, sizeof(double) * nx); have_almost = 1; }
        if (it == max_iter) { status = -2; break; }
        /* ---------- Newton matrix ---------- */
        for (int j = 0; j < nx; j++) Dx[j] = zl[j] / x[j];
        for (int q = 0; q < nub; q++) Dx[P.ubidx[q]] += zu[q] / v[q];
        for (int r = 0; r < mr; r++) dd[r] = z[r] / w[r];
        memset(K, 0, sizeof(double) * R * R);
        /* globals (idle, group excesses) eliminated: one t-space column each, weight Cd */
        for (int q = 0; q < NGL; q++) {
            double Dg = Dx[nxb + q], sdd = 0, sds = 0, prod = 1;
            int r0 = q == 0 ? NG : NG + 2 * q - 1, nr = q == 0 ? 1 : 2;
            for (int h = 0; h < nr; h++) { double d = dd[r0 + h]; sdd += d; sds += (h == 0 ? d : -d); prod *= d; }
            double Dsum = Dg + sdd;
            gD[q] = Dsum; gk[q] = sds;
            Cd[nf + q] = (Dg * sdd + (nr == 2 ? 4 * prod : 0)) / Dsum;
        }
        for (int q = 0; q < nf; q++) Cd[q] = 1;
        for (int q = 0; q < NG; q++) Cd[RT + q] = dd[q];
        for (int q = 0; q < R; q++) K[q * R + q] = 1 / Cd[q];
        int okfac = 1;
        double sqrt2S = sqrt(2 * SCALE);
        for (int b = 0; b < nb && okfac; b++) {
            int p = P.bp[b], o = P.boff[b];
            double *L = Hb + P.bhoff[b];
            for (int i2 = 0; i2 < p; i2++) for (int j2 = 0; j2 < p; j2++)
                L[i2 * p + j2] = 2 * P.qd[b] * P.sig[o + i2] * P.sig[o + j2];
            for (int i2 = 0; i2 < p; i2++) L[i2 * p + i2] += Dx[o + i2];
            if (P.imp[b] > 0) {
                if (P.bns[b]) {
                    double hv = 0.75 * P.imp[b] / sqrt(ssum[b]);
                    for (int i2 = 0; i2 < P.bns[b]; i2++) for (int j2 = 0; j2 < P.bns[b]; j2++) L[i2 * p + j2] += hv;
                }
                if (P.bhasb[b]) { int jb = P.bns[b]; L[jb * p + jb] += 0.75 * P.imp[b] / sqrt(x[o + jb]); }
            }
            if (P.bhase[b]) {  /* band rows: a = (s*sig, -1) */
                int r0 = P.bandrow[b];
                for (int hh = 0; hh < 2; hh++) {
                    double sg = hh == 0 ? 1 : -1, d = dd[r0 + hh];
                    for (int i2 = 0; i2 < p; i2++) {
                        double ai = i2 == p - 1 ? -1 : sg * P.sig[o + i2];
                        for (int j2 = 0; j2 < p; j2++) {
                            double aj = j2 == p - 1 ? -1 : sg * P.sig[o + j2];
                            L[i2 * p + j2] += d * ai * aj;
                        }
                    }
                }
            }
            memcpy(Bc + P.bhoff[b], L, sizeof(double) * p * p);
            if (!spd_inverse(L, p)) { okfac = 0; break; }
            /* beta = B^-1 sigma ; Gam = B^-1 A_b (gen rows scaled by sqrt d) */
            double *bt = beta + o;
            symv(L, p, P.sig + o, bt);
            double tau = 0;
            for (int i2 = 0; i2 < p; i2++) tau += P.sig[o + i2] * bt[i2];
            double *Vb = V + (size_t)b * RT;
            for (int q = 0; q < nf; q++) Vb[q] = sqrt2S * P.Fb[b * nf + q];
            for (int q = 0; q < NGL; q++) Vb[nf + q] = P.hT[(q == 0 ? 0 : 2 * q - 1) * nb + b];
            double ab[4];
            for (int q = 0; q < NG; q++) {
                double *gm = Gam + (size_t)o * NG;  /* layout: var-major, NG per var */
                double col[64];
                double s = 0;
                for (int i2 = 0; i2 < p; i2++) col[i2] = P.aG[q * nxb + o + i2];
                for (int i2 = 0; i2 < p; i2++) s += col[i2] * bt[i2];
                ab[q] = s;  /* A_b[:,q]' beta */
                double col2[16];
                symv(L, p, col, col2);
                for (int i2 = 0; i2 < p; i2++) gm[i2 * NG + q] = col2[i2];
            }
            /* K_tt += tau V V'; K_tg += V ab'; K_gg += A' Gam */
            for (int q1 = 0; q1 < RT; q1++) {
                double vq = Vb[q1];
                if (vq == 0) continue;
                double tv = tau * vq;
                for (int q2 = 0; q2 <= q1; q2++) K[q1 * R + q2] += tv * Vb[q2];
                for (int q2 = 0; q2 < NG; q2++) K[(RT + q2) * R + q1] += vq * ab[q2];
            }
            for (int q1 = 0; q1 < NG; q1++) for (int q2 = 0; q2 <= q1; q2++) {
                double s = 0;
                for (int i2 = 0; i2 < p; i2++) s += P.aG[q1 * nxb + o + i2] * Gam[(size_t)(o + i2) * NG + q2];
                K[(RT + q1) * R + RT + q2] += s;
            }
        }
        if (!okfac) { status = -3; break; }
        for (int q1 = 0; q1 < R; q1++) for (int q2 = q1 + 1; q2 < R; q2++) K[q1 * R + q2] = K[q2 * R + q1];
        if (!chol(K, R, Kd)) { status = -4; break; }

        /* ---------- two solves: predictor then corrector ---------- */
        double alpha = 0;
        for (int pass = 0; pass < 2; pass++) {
            if (pass == 0) {
                for (int j = 0; j < nx; j++) rcl[j] = -x[j] * zl[j];
                for (int q = 0; q < nub; q++) rcu[q] = -v[q] * zu[q];
                for (int r = 0; r < mr; r++) rcw[r] = -w[r] * z[r];
            } else {
                /* sigma from the affine step */
                double mua = 0;
                for (int j = 0; j < nx; j++) mua += (x[j] + alpha * dx[j]) * (zl[j] + alpha * dzl[j]);
                for (int q = 0; q < nub; q++) mua += (v[q] + alpha * dv[q]) * (zu[q] + alpha * dzu[q]);
                for (int r = 0; r < mr; r++) mua += (w[r] + alpha * dw[r]) * (z[r] + alpha * dz[r]);
                mua /= ncomp;
                double s3 = mua / mu, sm = s3 * s3 * s3 * mu;
                for (int j = 0; j < nx; j++) rcl[j] = sm - x[j] * zl[j] - dx[j] * dzl[j];
                for (int q = 0; q < nub; q++) rcu[q] = sm - v[q] * zu[q] - dv[q] * dzu[q];
                for (int r = 0; r < mr; r++) rcw[r] = sm - w[r] * z[r] - dw[r] * dz[r];
            }
            /* rhs = -rd + rcl/x - [(rcu + zu ru)/v] - A'((rcw + z rp)/w) */
            for (int j = 0; j < nx; j++) rhsv[j] = -rd[j] + rcl[j] / x[j];
            for (int q = 0; q < nub; q++) rhsv[P.ubidx[q]] -= (rcu[q] + zu[q] * ru[q]) / v[q];
            for (int r = 0; r < mr; r++) {
                double s = (rcw[r] + z[r] * rpv[r]) / w[r];
                for (int e = P.rp_[r]; e < P.rp_[r + 1]; e++) rhsv[P.ci[e]] -= P.cv[e] * s;
            }
            /* eliminate the globals: r_x -= sigma h (sum d s) r_g / Dsum */
            for (int q = 0; q < NGL; q++) {
                double f_ = gk[q] * rhsv[nxb + q] / gD[q];
                for (int b = 0; b < nb; b++) {
                    double h = V[(size_t)b * RT + nf + q];
                    if (h == 0) continue;
                    for (int j = P.boff[b]; j < P.boff[b + 1]; j++) rhsv[j] += P.sig[j] * h * f_;
                }
            }
            hsolve(&P, Hb, K, Kd, V, beta, Gam, rhsv, dx, qv);
            double lastrn = BIG;
            for (int ref = 0; ref < (mu < refmu ? nref : 0); ref++) {
                hmul(&P, Bc, V, Cd, dx, res, qv);
                double rn = 0, bn = 0;
                for (int j = 0; j < nxb; j++) { res[j] = rhsv[j] - res[j]; rn = FMAX(rn, fabs(res[j])); bn = FMAX(bn, fabs(rhsv[j])); }
                if (ipm_verbose) fprintf(stderr, "     pass %d ref %d relres %.2e\n", pass, ref, rn / bn);
                if (rn <= reftol * bn || (ref > 0 && rn > 0.5 * lastrn)) break;
                lastrn = rn;
                hsolve(&P, Hb, K, Kd, V, beta, Gam, res, tmp, qv);
                for (int j = 0; j < nxb; j++) dx[j] += tmp[j];
            }
            for (int q = 0; q < NGL; q++) {
                double tau = 0;
                for (int b = 0; b < nb; b++) {
                    double h = V[(size_t)b * RT + nf + q];
                    if (h == 0) continue;
                    for (int j = P.boff[b]; j < P.boff[b + 1]; j++) tau += P.sig[j] * h * dx[j];
                }
                dx[nxb + q] = (rhsv[nxb + q] + gk[q] * tau) / gD[q];
            }
            /* recover the rest */
            for (int j = 0; j < nx; j++) dzl[j] = (rcl[j] - zl[j] * dx[j]) / x[j];
            for (int q = 0; q < nub; q++) { dv[q] = -ru[q] - dx[P.ubidx[q]]; dzu[q] = (rcu[q] - zu[q] * dv[q]) / v[q]; }
            for (int r = 0; r < mr; r++) {
                double s = 0;
                for (int e = P.rp_[r]; e < P.rp_[r + 1]; e++) s += P.cv[e] * dx[P.ci[e]];
                dw[r] = -rpv[r] - s;
                dz[r] = (rcw[r] - z[r] * dw[r]) / w[r];
            }
            alpha = 1.0;
#define MS(a_, da_, cnt) for (int j = 0; j < (cnt); j++) if (a_[j] + alpha * da_[j] < 0) alpha = -a_[j] / da_[j];
            MS(x, dx, nx) MS(v, dv, nub) MS(w, dw, mr) MS(zl, dzl, nx) MS(zu, dzu, nub) MS(z, dz, mr)
#undef MS
        }
        if (ipm_verbose) {
            int jb = -1; const char *wh = "";
            for (int j = 0; j < nx; j++) { if (dx[j] < 0 && -x[j] / dx[j] <= alpha * 1.000001) { jb = j; wh = "x"; } if (dzl[j] < 0 && -zl[j] / dzl[j] <= alpha * 1.000001) { jb = j; wh = "zl"; } }
            for (int q = 0; q < nub; q++) { if (dv[q] < 0 && -v[q] / dv[q] <= alpha * 1.000001) { jb = q; wh = "v"; } if (dzu[q] < 0 && -zu[q] / dzu[q] <= alpha * 1.000001) { jb = q; wh = "zu"; } }
            for (int r = 0; r < mr; r++) { if (dw[r] < 0 && -w[r] / dw[r] <= alpha * 1.000001) { jb = r; wh = "w"; } if (dz[r] < 0 && -z[r] / dz[r] <= alpha * 1.000001) { jb = r; wh = "z"; } }
            fprintf(stderr, "   alpha %.3e blocked by %s[%d]\n", alpha, wh, jb);
            if (wh[0] == 'z' && wh[1] == 0) fprintf(stderr, "   row %d w %.3e z %.3e dw %.3e dz %.3e\n", jb, w[jb], z[jb], dw[jb], dz[jb]);
            if (wh[0] == 'x' || wh[0] == 'z') if (wh[0]=='x' || wh[1]=='l') fprintf(stderr, "   var %d x %.3e zl %.3e dx %.3e dzl %.3e slot %d\n", jb, x[jb], zl[jb], dx[jb], dzl[jb], P.slot[jb]);
        }
        alpha *= frac;
        if (!(alpha > 1e-10)) { status = -5; break; }
        /* dual correction: the Newton model of the impact gradient (concave sqrt) overestimates
         * it; move the gap into the bound dual so the dual residual follows the linear model */
        if (dualcorr) for (int b = 0; b < nb; b++) {
            if (!(P.imp[b] > 0)) continue;
            int o = P.boff[b];
            if (P.bns[b]) {
                double dS = 0;
                for (int j = o; j < o + P.bns[b]; j++) dS += dx[j];
                double S0 = ssum[b], S1 = S0 + alpha * dS;
                if (S1 > 0) {
                    double dl = 1.5 * P.imp[b] * (sqrt(S1) - sqrt(S0)) - 0.75 * P.imp[b] / sqrt(S0) * alpha * dS;
                    for (int j = o; j < o + P.bns[b]; j++) {
                        double zn = zl[j] + alpha * dzl[j];
                        dzl[j] += fmax(dl, -0.5 * zn) / alpha;
                    }
                }
            }
            if (P.bhasb[b]) {
                int j = o + P.bns[b];
                double x1 = x[j] + alpha * dx[j];
                if (x1 > 0) {
                    double dl = 1.5 * P.imp[b] * (sqrt(x1) - sqrt(x[j])) - 0.75 * P.imp[b] / sqrt(x[j]) * alpha * dx[j];
                    double zn = zl[j] + alpha * dzl[j];
                    dzl[j] += fmax(dl, -0.5 * zn) / alpha;
                }
            }
        }
        for (int j = 0; j < nx; j++) { x[j] += alpha * dx[j]; zl[j] += alpha * dzl[j]; }
        for (int q = 0; q < nub; q++) { v[q] += alpha * dv[q]; zu[q] += alpha * dzu[q]; }
        for (int r = 0; r < mr; r++) { w[r] += alpha * dw[r]; z[r] += alpha * dz[r]; }
    }
    /* output: on a failure after an almost-solved iterate, return that one with status 1 */
    if (status < 0 && have_almost) { memcpy(x, xa, sizeof(double) * nx); status = 1; }
    /* output */
    for (int i = 0; i < n; i++) buy[i] = 0;
    for (int j = 0; j < m; j++) sell[j] = 0;
    for (int b = 0; b < nb; b++) {
        for (int j = P.boff[b]; j < P.boff[b + 1]; j++) {
            if (P.slot[j] >= 0) sell[P.slot[j]] = x[j];
            else if (P.slot[j] == -1) buy[P.bsec[b]] = x[j];
        }
    }
    if (info) {
        info[0] = it; info[1] = fval / SCALE; info[2] = pinf; info[3] = dinf; info[4] = gap;
        info[5] = nx; info[6] = mr; info[7] = R;
    }
    (void)mem;
    return status;
}
