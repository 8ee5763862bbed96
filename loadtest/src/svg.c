/* The SVG report: one self-contained file, no scripts, no external references. */
#include "internal.h"
#include "lt/report.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#define W 960
#define H 830
#define PX0 90.0
#define PX1 880.0
/* The spectrum chart's plot area (y grows downwards). */
#define S_TOP 70.0
#define S_BOT 370.0
/* The timeline's plot area. */
#define T_TOP 480.0
#define T_BOT 770.0
/* The spectrum's x axis: log10(1 / (1 - p)) up to p = 99.999 %. */
#define X_NINES 5.0

static void xml_text(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

/* "250 µs", "12 ms", "1.5 s" for a value in milliseconds. */
static void fmt_ms(char *buf, size_t cap, double v)
{
    if (v >= 1000) snprintf(buf, cap, "%g s", v / 1000);
    else if (v >= 1) snprintf(buf, cap, "%g ms", v);
    else snprintf(buf, cap, "%g \xc2\xb5s", v * 1000);
}

/* A log axis over [10^lo, 10^hi] ms mapped to [bot, top]. */
typedef struct logaxis {
    int lo, hi;
    double top, bot;
} logaxis;

static void logaxis_fit(logaxis *a, double min_ms, double max_ms, double top, double bot)
{
    if (!(min_ms > 0)) min_ms = 0.001;
    if (!(max_ms > min_ms)) max_ms = min_ms * 10;
    a->lo = (int)floor(log10(min_ms));
    a->hi = (int)ceil(log10(max_ms));
    if (a->hi <= a->lo) a->hi = a->lo + 1;
    a->top = top;
    a->bot = bot;
}

static double logaxis_y(const logaxis *a, double v_ms)
{
    if (!(v_ms > 0)) v_ms = pow(10, a->lo);
    double t = (log10(v_ms) - a->lo) / (a->hi - a->lo);
    if (t < 0) t = 0;
    if (t > 1) t = 1;
    return a->bot - t * (a->bot - a->top);
}

static void logaxis_draw(FILE *f, const logaxis *a, double x, bool right)
{
    for (int d = a->lo; d <= a->hi; d++) {
        char label[32];
        double y = logaxis_y(a, pow(10, d));
        fmt_ms(label, sizeof label, pow(10, d));
        if (!right)
            fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>\n", PX0,
                    y, PX1, y);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\" class=\"tick\">%s</text>\n",
                right ? x + 6 : x - 6, y + 4, right ? "start" : "end", label);
    }
}

static double spectrum_x(double p)
{
    double nines = p >= 100 ? X_NINES : log10(1.0 / (1.0 - p / 100.0));
    if (nines > X_NINES) nines = X_NINES;
    return PX0 + nines / X_NINES * (PX1 - PX0);
}

static void draw_spectrum(FILE *f, const lt_result *r)
{
    const rp_hist *h = &r->latency;
    logaxis ax;
    logaxis_fit(&ax, (double)rp_hist_min(h) / 1e6, (double)rp_hist_max(h) / 1e6, S_TOP, S_BOT);
    fprintf(f, "<g id=\"spectrum\">\n");
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"title\">Latency by percentile (%s)</text>\n",
            PX0, S_TOP - 16,
            r->open_loop ? "from intended start, coordinated omission corrected"
                         : "closed loop, from actual start");
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" class=\"frame\"/>\n",
            PX0, S_TOP, PX1 - PX0, S_BOT - S_TOP);
    logaxis_draw(f, &ax, PX0, false);
    static const struct {
        double p;
        const char *label;
    } xt[] = {{0, "0%"}, {90, "90%"}, {99, "99%"}, {99.9, "99.9%"}, {99.99, "99.99%"}, {99.999, "99.999%"}};
    for (size_t i = 0; i < sizeof xt / sizeof xt[0]; i++) {
        double x = spectrum_x(xt[i].p);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>\n", x,
                S_TOP, x, S_BOT);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" class=\"tick\">%s</text>\n",
                x, S_BOT + 16, xt[i].label);
    }
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" class=\"axis\">percentile</text>\n",
            (PX0 + PX1) / 2, S_BOT + 34);
    if (h->count) {
        fprintf(f, "<polyline class=\"lat\" points=\"");
        for (size_t i = 0; i < lt__spectrum_n; i++) {
            double p = lt__spectrum_ps[i];
            if (p > 99.999) break;
            if (p > 0 && (double)h->count * (1 - p / 100) < 1) break; /* beyond the data */
            fprintf(f, "%.1f,%.1f ", spectrum_x(p),
                    logaxis_y(&ax, (double)rp_hist_percentile(h, p) / 1e6));
        }
        fprintf(f, "\"/>\n");
        double ymax = logaxis_y(&ax, (double)rp_hist_max(h) / 1e6);
        char label[32];
        fmt_ms(label, sizeof label, (double)rp_hist_max(h) / 1e6);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"maxline\"/>\n",
                PX0, ymax, PX1, ymax);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" class=\"tick\">max %s</text>\n",
                PX1 - 4, ymax - 4, label);
        static const double marks[] = {50, 90, 99, 99.9};
        for (size_t i = 0; i < 4; i++) {
            double v = (double)rp_hist_percentile(h, marks[i]) / 1e6;
            fmt_ms(label, sizeof label, v);
            double x = spectrum_x(marks[i]), y = logaxis_y(&ax, v);
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" class=\"dot\"/>\n", x, y);
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"tick\">p%g %s</text>\n", x + 5, y + 14,
                    marks[i], label);
        }
    } else {
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"axis\">no calls measured</text>\n",
                PX0 + 20, (S_TOP + S_BOT) / 2);
    }
    fprintf(f, "</g>\n");
}

static void draw_timeline(FILE *f, const lt_result *r)
{
    size_t n = r->nseconds;
    double max_rate = 1, min_p99 = 0, max_p99 = 0;
    for (size_t s = 0; s < n; s++) {
        const lt_second *x = &r->seconds[s];
        if ((double)x->completed > max_rate) max_rate = (double)x->completed;
        if (x->completed == 0) continue;
        double p = (double)x->p99_ns / 1e6;
        if (min_p99 == 0 || p < min_p99) min_p99 = p;
        if (p > max_p99) max_p99 = p;
    }
    /* A round top for the rate axis: 1, 2 or 5 times a power of ten per tick. */
    double raw = max_rate * 1.05 / 5, mag = pow(10, floor(log10(raw))), tick;
    if (raw <= mag) tick = mag;
    else if (raw <= 2 * mag) tick = 2 * mag;
    else if (raw <= 5 * mag) tick = 5 * mag;
    else tick = 10 * mag;
    max_rate = tick * 5;
    logaxis ax;
    logaxis_fit(&ax, min_p99, max_p99, T_TOP, T_BOT);
    double span = n > 1 ? (double)n : 1;
#define TX(t) (PX0 + (t) / span * (PX1 - PX0))
#define RY(v) (T_BOT - (v) / max_rate * (T_BOT - T_TOP))

    fprintf(f, "<g id=\"timeline\">\n");
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"title\">Per second: completed calls "
               "(<tspan class=\"ratel\">rate</tspan>) and <tspan class=\"p99l\">p99</tspan> "
               "latency</text>\n",
            PX0, T_TOP - 16);
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" class=\"frame\"/>\n",
            PX0, T_TOP, PX1 - PX0, T_BOT - T_TOP);
    double warm = r->cfg.warmup_s < span ? r->cfg.warmup_s : span;
    if (warm > 0) {
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" class=\"warmup\"/>\n",
                PX0, T_TOP, TX(warm) - PX0, T_BOT - T_TOP);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"tick\">warmup</text>\n", PX0 + 4, T_TOP + 14);
    }
    /* Left axis: rate, 5 ticks. */
    for (int i = 0; i <= 5; i++) {
        double v = max_rate * i / 5;
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" class=\"tick ratel\">%g/s</text>\n",
                PX0 - 6, RY(v) + 4, v);
    }
    /* Right axis: p99, log. */
    logaxis_draw(f, &ax, PX1, true);
    /* Time ticks: about ten. */
    size_t step = n > 10 ? (n + 9) / 10 : 1;
    for (size_t t = 0; t <= n; t += step) {
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" class=\"tick\">%zus</text>\n",
                TX((double)t), T_BOT + 16, t);
    }
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" class=\"axis\">seconds since "
               "the start (by completion time)</text>\n",
            (PX0 + PX1) / 2, T_BOT + 34);
    fprintf(f, "<polyline class=\"rate\" points=\"");
    for (size_t s = 0; s < n; s++)
        fprintf(f, "%.1f,%.1f ", TX((double)s + 0.5), RY((double)r->seconds[s].completed));
    fprintf(f, "\"/>\n");
    fprintf(f, "<polyline class=\"p99\" points=\"");
    for (size_t s = 0; s < n; s++) {
        if (!r->seconds[s].completed) continue;
        fprintf(f, "%.1f,%.1f ", TX((double)s + 0.5), logaxis_y(&ax, (double)r->seconds[s].p99_ns / 1e6));
    }
    fprintf(f, "\"/>\n");
    fprintf(f, "</g>\n");
#undef TX
#undef RY
}

void lt_report_svg_write(FILE *f, const lt_result *r)
{
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "viewBox=\"0 0 %d %d\">\n",
            W, H, W, H);
    fputs("<style>\n"
          "text{font-family:sans-serif;font-size:12px;fill:#222}\n"
          ".title{font-size:15px;font-weight:bold}\n"
          ".head{font-size:13px}\n"
          ".tick{font-size:11px;fill:#444}\n"
          ".axis{font-size:12px;fill:#444}\n"
          ".frame{fill:none;stroke:#888}\n"
          ".grid{stroke:#ddd;stroke-width:1}\n"
          ".warmup{fill:#eee}\n"
          ".lat{fill:none;stroke:#1f5fbf;stroke-width:2}\n"
          ".dot{fill:#1f5fbf}\n"
          ".maxline{stroke:#c33;stroke-dasharray:4 3}\n"
          ".rate{fill:none;stroke:#1f5fbf;stroke-width:2}\n"
          ".p99{fill:none;stroke:#c33;stroke-width:2}\n"
          ".ratel{fill:#1f5fbf}\n"
          ".p99l{fill:#c33}\n"
          "</style>\n"
          "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
          f);
    fprintf(f, "<text x=\"%.1f\" y=\"24\" class=\"head\">recpipe loadtest \xe2\x80\x94 ", PX0);
    xml_text(f, r->cfg.target);
    if (r->open_loop)
        fprintf(f, ", open loop %g/s (%s)", r->cfg.rate, lt_arrivals_name(r->cfg.arrivals));
    else
        fprintf(f, ", closed loop, %u in flight", r->cfg.concurrency);
    fprintf(f, ", %llu calls, %.1f/s achieved, %llu errors</text>\n",
            (unsigned long long)r->measured, r->achieved_rate, (unsigned long long)r->errors);
    draw_spectrum(f, r);
    draw_timeline(f, r);
    fputs("</svg>\n", f);
}

int lt_report_svg(const char *path, const lt_result *r, rp_error *err)
{
    FILE *f = fopen(path, "w");
    if (!f) return rp_errorf(err, RP_EIO, "%s: cannot write: %s", path, strerror(errno));
    lt_report_svg_write(f, r);
    if (fclose(f) != 0) return rp_errorf(err, RP_EIO, "%s: cannot write: %s", path, strerror(errno));
    return RP_OK;
}
