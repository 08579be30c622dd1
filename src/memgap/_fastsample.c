/* memgap._fastsample: the sampler's high-rate loop, in a thread that never takes the GIL.
 *
 * A Python thread woken 100 times a second costs about 1% of a core on a small VM before
 * it reads anything (benchmarks/sampler_cost.py), and each tick then runs cold. This
 * thread wakes on an absolute monotonic clock, pread()s the kernel files it was given
 * (kept open), extracts the numbers asked for and appends one row of int64 to a buffer
 * that Python drains a few times a second.
 *
 * Two tiers. Every tick reads the totals: the sources flagged every_tick (a cgroup's
 * usage) and each group process's /proc/PID/statm (resident pages). Every full_every-th
 * tick, and each tick Python asks for, is a full one: it reads every source and each
 * group process's /proc/PID/status for the breakdown. On this project's 2-core VM a cold
 * wakeup costs ~40 us and /proc/meminfo, memory.stat and status ~35 us each, so reading
 * everything at 100 Hz would cost ~2% of a core; totals at 100 Hz and the breakdown at
 * 10 Hz cost under 1%.
 *
 * Sources: a file and the keys to take from it, in one of three layouts --
 *   SINGLE  the whole file is one number            (memory.current, usage_in_bytes)
 *   KV      lines "key value"                         (memory.stat; keys end with ' ')
 *   KB      lines "Key:   value kB", times 1024       (/proc/meminfo; keys end with ':')
 * plus one group of files read with the same keys (every /proc/PID/status of the
 * engine's process tree), each key summed or maxed over the group, and the number of
 * group files that gave at least one key.
 *
 * A key is found at the start of the text or right after a newline (the first such
 * place); its value is the rest of that line, stripped of blanks, an optional sign
 * and ASCII digits -- exactly what memgap.collect.keyed.lookup accepts from the same text
 * (tests/unit/test_fastsample.py checks the two against each other). A missing or
 * malformed value is MISSING (INT64_MIN), which Python turns into None.
 *
 * Row: [t_ns (CLOCK_MONOTONIC), full (1/0), source slots..., group keys..., group count,
 *       statm resident bytes summed over the group]. What a tick did not read is MISSING;
 * the group count is of status files on a full tick, of statm files otherwise.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MISSING INT64_MIN
enum { MODE_SINGLE = 0, MODE_KV = 1, MODE_KB = 2 };
enum { AGG_SUM = 0, AGG_MAX = 1 };

typedef struct {
    char *path;
    int fd;       /* -1: closed */
    int opened;   /* opened at least once */
    int reopen;   /* may be reopened by path after its descriptor died */
    int mode;
    int every_tick; /* read on every tick, not only on full ones */
    int nkeys;
    char **keys;
    size_t *klens;
} Source;

typedef struct {
    PyObject_HEAD
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    int running;
    int stop;
    int closed;
    int64_t period_ns;
    Source *src;
    int nsrc;
    int nslots;
    int gmode;
    int gnkeys;
    char **gkeys;
    size_t *gklens;
    int *gagg;
    int *gfds; /* /proc/PID/status, -1: none or dead */
    int *sfds; /* /proc/PID/statm, likewise */
    int ngfds;
    int full_every;
    uint64_t tick_no;
    int64_t page_bytes;
    int row_len;
    int64_t *rows;
    size_t nrows;
    size_t caprows;
    char *buf;
    size_t bufsize;
    int64_t *scratch;
} FS;

/* ------------------------------------------------------------------ parsing */

static int is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

static int parse_int(const char *s, const char *e, int64_t *out) {
    while (s < e && is_blank(*s)) s++;
    while (e > s && is_blank(e[-1])) e--;
    int neg = 0;
    if (s < e && (*s == '+' || *s == '-')) {
        neg = *s == '-';
        s++;
    }
    if (s == e) return 0;
    uint64_t v = 0;
    for (; s < e; s++) {
        if (*s < '0' || *s > '9') return 0;
        v = v * 10 + (uint64_t)(*s - '0');
        if (v > (uint64_t)INT64_MAX) return 0;
    }
    *out = neg ? -(int64_t)v : (int64_t)v;
    return 1;
}

static const char *find_key(const char *t, size_t n, const char *key, size_t klen) {
    const char *end = t + n;
    if (n >= klen && memcmp(t, key, klen) == 0) return t + klen;
    const char *p = t;
    while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        p++;
        if ((size_t)(end - p) >= klen && memcmp(p, key, klen) == 0) return p + klen;
    }
    return NULL;
}

/* vals[k] for each key, MISSING where absent or malformed; returns how many were found. */
static int extract(const char *t, size_t n, int mode, int nkeys, char **keys, size_t *klens, int64_t *vals) {
    int found = 0;
    if (mode == MODE_SINGLE) {
        /* as Python's text.strip().isdigit(): blanks and newlines around, digits only */
        const char *s = t, *e = t + n;
        while (s < e && (is_blank(*s) || *s == '\n')) s++;
        while (e > s && (is_blank(e[-1]) || e[-1] == '\n')) e--;
        int64_t v;
        vals[0] = s < e && *s >= '0' && *s <= '9' && parse_int(s, e, &v) ? v : MISSING;
        return vals[0] != MISSING;
    }
    for (int k = 0; k < nkeys; k++) {
        vals[k] = MISSING;
        const char *i = find_key(t, n, keys[k], klens[k]);
        if (i == NULL) continue;
        const char *j = memchr(i, '\n', (size_t)(t + n - i));
        if (j == NULL) j = t + n;
        if (mode == MODE_KB) {
            if (j - i < 3 || memcmp(j - 3, " kB", 3) != 0) continue;
            j -= 3;
        }
        int64_t v;
        if (!parse_int(i, j, &v)) continue;
        if (mode == MODE_KB) {
            if (v > INT64_MAX / 1024 || v < -(INT64_MAX / 1024)) continue;
            v *= 1024;
        }
        vals[k] = v;
        found++;
    }
    return found;
}

/* resident bytes from /proc/PID/statm ("size resident shared text lib data dt", pages) */
static int statm_resident(const char *t, size_t n, int64_t page_bytes, int64_t *out) {
    const char *e = t + n, *p = t;
    while (p < e && *p != ' ') p++; /* size */
    if (p == e) return 0;
    const char *q = ++p;
    while (q < e && *q != ' ' && *q != '\n') q++;
    int64_t pages;
    if (!parse_int(p, q, &pages) || pages < 0 || pages > INT64_MAX / page_bytes) return 0;
    *out = pages * page_bytes;
    return 1;
}

/* ------------------------------------------------------------------ reading */

static int gone_errno(int e) { return e == ESRCH || e == ENODEV || e == ENOENT || e == EBADF || e == ENXIO; }

/* Whole text of fd into fs->buf; length, or -1 with errno set. */
static ssize_t read_whole(FS *fs, int fd) {
    for (;;) {
        ssize_t r = pread(fd, fs->buf, fs->bufsize, 0);
        if (r < 0 && (errno == ESPIPE || errno == EINVAL)) {
            if (lseek(fd, 0, SEEK_SET) < 0) return -1;
            r = read(fd, fs->buf, fs->bufsize);
        }
        if (r < 0) return -1;
        if ((size_t)r < fs->bufsize) return r;
        char *bigger = realloc(fs->buf, fs->bufsize * 2);
        if (bigger == NULL) return r; /* keep what fits */
        fs->buf = bigger;
        fs->bufsize *= 2;
    }
}

static ssize_t read_source(FS *fs, Source *s) {
    for (int attempt = 0; attempt < 2; attempt++) {
        if (s->fd < 0) {
            if (s->opened && !s->reopen) return -1;
            s->fd = open(s->path, O_RDONLY | O_CLOEXEC);
            if (s->fd < 0) return -1;
            s->opened = 1;
        }
        ssize_t r = read_whole(fs, s->fd);
        if (r >= 0) return r;
        int e = errno;
        close(s->fd);
        s->fd = -1;
        if (!gone_errno(e)) return -1;
    }
    return -1;
}

static void tick(FS *fs, int full) {
    int64_t *row;
    if (fs->nrows == fs->caprows) {
        size_t cap = fs->caprows ? fs->caprows * 2 : 256;
        int64_t *more = realloc(fs->rows, cap * (size_t)fs->row_len * sizeof(int64_t));
        if (more == NULL) return; /* out of memory: this tick is lost, not the process */
        fs->rows = more;
        fs->caprows = cap;
    }
    row = fs->rows + fs->nrows * (size_t)fs->row_len;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    row[0] = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    row[1] = full;
    int64_t *slot = row + 2;
    for (int i = 0; i < fs->nsrc; i++) {
        Source *s = &fs->src[i];
        int width = s->mode == MODE_SINGLE ? 1 : s->nkeys;
        ssize_t n = full || s->every_tick ? read_source(fs, s) : -1;
        if (n < 0) {
            for (int k = 0; k < width; k++) slot[k] = MISSING;
        } else {
            extract(fs->buf, (size_t)n, s->mode, s->nkeys, s->keys, s->klens, slot);
        }
        slot += width;
    }
    int64_t *g = slot;
    int64_t count = 0, resident = MISSING;
    for (int k = 0; k < fs->gnkeys; k++) g[k] = MISSING;
    for (int f = 0; f < fs->ngfds; f++) {
        int *fdp = full ? &fs->gfds[f] : &fs->sfds[f];
        if (*fdp < 0) continue;
        ssize_t n = read_whole(fs, *fdp);
        if (n < 0) {
            if (gone_errno(errno)) { /* the process exited: its descriptor is dead for good */
                close(*fdp);
                *fdp = -1;
            }
            continue;
        }
        if (!full) {
            int64_t r;
            if (!statm_resident(fs->buf, (size_t)n, fs->page_bytes, &r)) continue;
            count++;
            resident = (resident == MISSING ? 0 : resident) + r;
            continue;
        }
        if (extract(fs->buf, (size_t)n, fs->gmode, fs->gnkeys, fs->gkeys, fs->gklens, fs->scratch) == 0) continue;
        count++;
        for (int k = 0; k < fs->gnkeys; k++) {
            int64_t v = fs->scratch[k];
            if (fs->gagg[k] == AGG_MAX) {
                if (v != MISSING && (g[k] == MISSING || v > g[k])) g[k] = v;
            } else {
                /* as the Python path: a key missing from one file adds 0 */
                if (g[k] == MISSING) g[k] = 0;
                if (v != MISSING) g[k] += v;
            }
        }
    }
    g[fs->gnkeys] = count;
    g[fs->gnkeys + 1] = resident;
    fs->nrows++;
}

static void *loop(void *arg) {
    FS *fs = arg;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    pthread_mutex_lock(&fs->mu);
    while (!fs->stop) {
        int64_t ns = next.tv_nsec + fs->period_ns;
        next.tv_sec += ns / 1000000000;
        next.tv_nsec = ns % 1000000000;
        int rc = 0;
        while (!fs->stop && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&fs->cv, &fs->mu, &next);
        if (fs->stop) break;
        tick(fs, fs->tick_no % (uint64_t)fs->full_every == 0);
        fs->tick_no++;
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > next.tv_sec || (now.tv_sec == next.tv_sec && now.tv_nsec > next.tv_nsec)) {
            /* after a stall, skip the missed ticks instead of bursting */
            next = now;
        }
    }
    pthread_mutex_unlock(&fs->mu);
    return NULL;
}

/* ------------------------------------------------------------------ Python type */

static void free_keys(char **keys, size_t *klens, int n) {
    if (keys) {
        for (int i = 0; i < n; i++) free(keys[i]);
    }
    free(keys);
    free(klens);
}

static int take_keys(PyObject *seq, char ***keys_out, size_t **klens_out, int *n_out) {
    PyObject *fast = PySequence_Fast(seq, "keys must be a sequence of str");
    if (fast == NULL) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    char **keys = calloc((size_t)(n ? n : 1), sizeof(char *));
    size_t *klens = calloc((size_t)(n ? n : 1), sizeof(size_t));
    if (!keys || !klens) {
        free(keys);
        free(klens);
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t len;
        const char *k = PyUnicode_AsUTF8AndSize(PySequence_Fast_GET_ITEM(fast, i), &len);
        if (k == NULL || len == 0) {
            if (k != NULL) PyErr_SetString(PyExc_ValueError, "empty key");
            free_keys(keys, klens, (int)n);
            Py_DECREF(fast);
            return -1;
        }
        keys[i] = malloc((size_t)len);
        if (keys[i] == NULL) {
            free_keys(keys, klens, (int)n);
            Py_DECREF(fast);
            PyErr_NoMemory();
            return -1;
        }
        memcpy(keys[i], k, (size_t)len);
        klens[i] = (size_t)len;
    }
    Py_DECREF(fast);
    *keys_out = keys;
    *klens_out = klens;
    *n_out = (int)n;
    return 0;
}

static void close_group(FS *fs) {
    for (int i = 0; i < fs->ngfds; i++) {
        if (fs->gfds[i] >= 0) close(fs->gfds[i]);
        if (fs->sfds[i] >= 0) close(fs->sfds[i]);
    }
    free(fs->gfds);
    free(fs->sfds);
    fs->gfds = NULL;
    fs->sfds = NULL;
    fs->ngfds = 0;
}

static void fs_release(FS *fs) {
    for (int i = 0; i < fs->nsrc; i++) {
        Source *s = &fs->src[i];
        if (s->fd >= 0) close(s->fd);
        s->fd = -1;
        free(s->path);
        free_keys(s->keys, s->klens, s->nkeys);
    }
    free(fs->src);
    fs->src = NULL;
    fs->nsrc = 0;
    close_group(fs);
    free_keys(fs->gkeys, fs->gklens, fs->gnkeys);
    fs->gkeys = NULL;
    fs->gklens = NULL;
    free(fs->gagg);
    fs->gagg = NULL;
    free(fs->rows);
    fs->rows = NULL;
    free(fs->buf);
    fs->buf = NULL;
    free(fs->scratch);
    fs->scratch = NULL;
}

static void stop_thread(FS *fs) {
    if (!fs->running) return;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&fs->mu);
    fs->stop = 1;
    pthread_cond_signal(&fs->cv);
    pthread_mutex_unlock(&fs->mu);
    pthread_join(fs->thread, NULL);
    Py_END_ALLOW_THREADS
    fs->running = 0;
}

static void FS_dealloc(FS *fs) {
    stop_thread(fs);
    fs_release(fs);
    pthread_mutex_destroy(&fs->mu);
    pthread_cond_destroy(&fs->cv);
    Py_TYPE(fs)->tp_free((PyObject *)fs);
}

static PyObject *FS_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    FS *fs = (FS *)type->tp_alloc(type, 0);
    if (fs == NULL) return NULL;
    pthread_mutex_init(&fs->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&fs->cv, &ca);
    pthread_condattr_destroy(&ca);
    return (PyObject *)fs;
}

/* FastSampler(rate_hz, sources, group_mode, group_keys, group_agg, full_every=1)
 * sources: sequence of (path, mode, keys, reopen, every_tick) */
static int FS_init(FS *fs, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"rate_hz", "sources", "group_mode", "group_keys", "group_agg", "full_every", NULL};
    double rate;
    PyObject *sources, *gkeys, *gagg;
    int gmode, full_every = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "dOiOO|i", kwlist, &rate, &sources, &gmode, &gkeys, &gagg,
                                     &full_every))
        return -1;
    if (full_every < 1) {
        PyErr_Format(PyExc_ValueError, "full_every must be at least 1, got %d", full_every);
        return -1;
    }
    if (fs->src != NULL || fs->running) {
        PyErr_SetString(PyExc_RuntimeError, "FastSampler is already initialised");
        return -1;
    }
    if (!(rate > 0 && rate <= 10000)) {
        PyErr_Format(PyExc_ValueError, "rate_hz must be in (0, 10000], got %g", rate);
        return -1;
    }
    if (gmode != MODE_KV && gmode != MODE_KB) {
        PyErr_SetString(PyExc_ValueError, "group_mode must be KV or KB");
        return -1;
    }
    fs->period_ns = (int64_t)(1e9 / rate);
    fs->full_every = full_every;
    fs->page_bytes = sysconf(_SC_PAGESIZE);
    if (fs->page_bytes <= 0) fs->page_bytes = 4096;
    PyObject *fast = PySequence_Fast(sources, "sources must be a sequence");
    if (fast == NULL) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    fs->src = calloc((size_t)(n ? n : 1), sizeof(Source));
    if (fs->src == NULL) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    int maxkeys = 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *path;
        int mode, reopen, every_tick;
        PyObject *keys;
        Source *s = &fs->src[i];
        s->fd = -1;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(fast, i), "siOpp", &path, &mode, &keys, &reopen, &every_tick)) goto fail;
        if (mode != MODE_SINGLE && mode != MODE_KV && mode != MODE_KB) {
            PyErr_Format(PyExc_ValueError, "source %zd: unknown mode %d", i, mode);
            goto fail;
        }
        s->path = strdup(path);
        s->mode = mode;
        s->reopen = reopen;
        s->every_tick = every_tick;
        fs->nsrc = (int)i + 1;
        if (s->path == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        if (take_keys(keys, &s->keys, &s->klens, &s->nkeys) < 0) goto fail;
        if (mode != MODE_SINGLE && s->nkeys == 0) {
            PyErr_Format(PyExc_ValueError, "source %zd (%s): no keys", i, path);
            goto fail;
        }
        fs->nslots += mode == MODE_SINGLE ? 1 : s->nkeys;
        if (s->nkeys > maxkeys) maxkeys = s->nkeys;
    }
    Py_DECREF(fast);
    fast = NULL;
    fs->gmode = gmode;
    if (take_keys(gkeys, &fs->gkeys, &fs->gklens, &fs->gnkeys) < 0) goto fail;
    PyObject *afast = PySequence_Fast(gagg, "group_agg must be a sequence of int");
    if (afast == NULL) goto fail;
    if (PySequence_Fast_GET_SIZE(afast) != fs->gnkeys) {
        Py_DECREF(afast);
        PyErr_SetString(PyExc_ValueError, "group_agg must give one aggregation per group key");
        goto fail;
    }
    fs->gagg = calloc((size_t)(fs->gnkeys ? fs->gnkeys : 1), sizeof(int));
    if (fs->gagg == NULL) {
        Py_DECREF(afast);
        PyErr_NoMemory();
        goto fail;
    }
    for (int k = 0; k < fs->gnkeys; k++) {
        long a = PyLong_AsLong(PySequence_Fast_GET_ITEM(afast, k));
        if (a != AGG_SUM && a != AGG_MAX) {
            Py_DECREF(afast);
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "aggregation must be SUM or MAX");
            goto fail;
        }
        fs->gagg[k] = (int)a;
    }
    Py_DECREF(afast);
    if (fs->gnkeys > maxkeys) maxkeys = fs->gnkeys;
    fs->row_len = 2 + fs->nslots + fs->gnkeys + 2;
    fs->bufsize = 8192;
    fs->buf = malloc(fs->bufsize);
    fs->scratch = calloc((size_t)maxkeys, sizeof(int64_t));
    if (fs->buf == NULL || fs->scratch == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    return 0;
fail:
    Py_XDECREF(fast);
    fs_release(fs);
    return -1;
}

static int check_open(FS *fs) {
    if (fs->closed || fs->src == NULL) {
        PyErr_SetString(PyExc_ValueError, "FastSampler is closed");
        return -1;
    }
    return 0;
}

static PyObject *FS_start(FS *fs, PyObject *unused) {
    if (check_open(fs) < 0) return NULL;
    if (fs->running) Py_RETURN_NONE;
    fs->stop = 0;
    int rc = pthread_create(&fs->thread, NULL, loop, fs);
    if (rc != 0) {
        errno = rc;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    fs->running = 1;
    Py_RETURN_NONE;
}

static PyObject *FS_stop(FS *fs, PyObject *unused) {
    stop_thread(fs);
    Py_RETURN_NONE;
}

/* drain(sample_now=False) -> bytes: every row since the last drain (with one taken now
 * first when asked), as native int64. */
static PyObject *FS_drain(FS *fs, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"sample_now", NULL};
    int now = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|p", kwlist, &now)) return NULL;
    if (check_open(fs) < 0) return NULL;
    char *copy = NULL;
    size_t nbytes = 0;
    int oom = 0;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&fs->mu);
    if (now) tick(fs, 1);
    nbytes = fs->nrows * (size_t)fs->row_len * sizeof(int64_t);
    if (nbytes) {
        copy = malloc(nbytes);
        if (copy) {
            memcpy(copy, fs->rows, nbytes);
            fs->nrows = 0;
        } else {
            oom = 1;
        }
    }
    pthread_mutex_unlock(&fs->mu);
    Py_END_ALLOW_THREADS
    if (oom) return PyErr_NoMemory();
    PyObject *out = PyBytes_FromStringAndSize(copy ? copy : "", (Py_ssize_t)nbytes);
    free(copy);
    return out;
}

static int dup_or_none(PyObject *o) {
    long fd = PyLong_AsLong(o);
    if (fd == -1 && PyErr_Occurred()) return -2;
    if (fd < 0) return -1;
    int d = fcntl((int)fd, F_DUPFD_CLOEXEC, 0);
    if (d < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -2;
    }
    return d;
}

/* set_group([(status_fd, statm_fd), ...]): the group's processes from now on (-1: that
 * file is not read). The descriptors are duplicated: the caller keeps and closes its own. */
static PyObject *FS_set_group(FS *fs, PyObject *arg) {
    if (check_open(fs) < 0) return NULL;
    PyObject *fast = PySequence_Fast(arg, "set_group takes a sequence of (status_fd, statm_fd)");
    if (fast == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    int *gfds = calloc((size_t)(n ? n : 1), sizeof(int));
    int *sfds = calloc((size_t)(n ? n : 1), sizeof(int));
    if (gfds == NULL || sfds == NULL) {
        free(gfds);
        free(sfds);
        Py_DECREF(fast);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) gfds[i] = sfds[i] = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PySequence_Fast_GET_ITEM(fast, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_TypeError, "set_group takes a sequence of (status_fd, statm_fd)");
            goto fail;
        }
        if ((gfds[i] = dup_or_none(PyTuple_GET_ITEM(pair, 0))) == -2) goto fail;
        if ((sfds[i] = dup_or_none(PyTuple_GET_ITEM(pair, 1))) == -2) goto fail;
    }
    Py_DECREF(fast);
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&fs->mu);
    close_group(fs);
    fs->gfds = gfds;
    fs->sfds = sfds;
    fs->ngfds = (int)n;
    pthread_mutex_unlock(&fs->mu);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
fail:
    for (Py_ssize_t i = 0; i < n; i++) {
        if (gfds[i] >= 0) close(gfds[i]);
        if (sfds[i] >= 0) close(sfds[i]);
    }
    free(gfds);
    free(sfds);
    Py_DECREF(fast);
    return NULL;
}

static PyObject *FS_close(FS *fs, PyObject *unused) {
    stop_thread(fs);
    fs_release(fs);
    fs->closed = 1;
    Py_RETURN_NONE;
}

static PyObject *FS_row_len(FS *fs, void *closure) { return PyLong_FromLong(fs->row_len); }
static PyObject *FS_running(FS *fs, void *closure) { return PyBool_FromLong(fs->running); }

static PyMethodDef FS_methods[] = {
    {"start", (PyCFunction)FS_start, METH_NOARGS, "Start the sampling thread."},
    {"stop", (PyCFunction)FS_stop, METH_NOARGS, "Stop and join the sampling thread."},
    {"drain", (PyCFunction)(void (*)(void))FS_drain, METH_VARARGS | METH_KEYWORDS,
     "drain(sample_now=False) -> bytes of int64 rows since the last drain."},
    {"set_group", (PyCFunction)FS_set_group, METH_O,
     "set_group([(status_fd, statm_fd), ...]): the group's processes from now on."},
    {"close", (PyCFunction)FS_close, METH_NOARGS, "Stop the thread and close every descriptor."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef FS_getset[] = {
    {"row_len", (getter)FS_row_len, NULL, "int64 values per row", NULL},
    {"running", (getter)FS_running, NULL, "whether the thread runs", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject FSType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "memgap._fastsample.FastSampler",
    .tp_basicsize = sizeof(FS),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The sampler's high-rate loop in a native thread.",
    .tp_new = FS_new,
    .tp_init = (initproc)FS_init,
    .tp_dealloc = (destructor)FS_dealloc,
    .tp_methods = FS_methods,
    .tp_getset = FS_getset,
};

/* extract(text: bytes, mode, keys) -> list[int | None], the parser alone (for tests). */
static PyObject *py_extract(PyObject *self, PyObject *args) {
    Py_buffer text;
    int mode;
    PyObject *keys;
    if (!PyArg_ParseTuple(args, "y*iO", &text, &mode, &keys)) return NULL;
    char **ks = NULL;
    size_t *kl = NULL;
    int nk = 0;
    if (take_keys(keys, &ks, &kl, &nk) < 0) {
        PyBuffer_Release(&text);
        return NULL;
    }
    int width = mode == MODE_SINGLE ? 1 : nk;
    int64_t *vals = calloc((size_t)(width ? width : 1), sizeof(int64_t));
    PyObject *out = NULL;
    if (vals == NULL) {
        PyErr_NoMemory();
    } else if (mode != MODE_SINGLE && mode != MODE_KV && mode != MODE_KB) {
        PyErr_Format(PyExc_ValueError, "unknown mode %d", mode);
    } else {
        extract(text.buf, (size_t)text.len, mode, nk, ks, kl, vals);
        out = PyList_New(width);
        for (int i = 0; out && i < width; i++) {
            PyObject *v = vals[i] == MISSING ? Py_NewRef(Py_None) : PyLong_FromLongLong(vals[i]);
            PyList_SET_ITEM(out, i, v);
        }
    }
    free(vals);
    free_keys(ks, kl, nk);
    PyBuffer_Release(&text);
    return out;
}

static PyMethodDef module_methods[] = {
    {"extract", py_extract, METH_VARARGS, "extract(text, mode, keys) -> list of int or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "memgap._fastsample", "The sampler's high-rate loop in a native thread.", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__fastsample(void) {
    if (PyType_Ready(&FSType) < 0) return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL) return NULL;
    Py_INCREF(&FSType);
    if (PyModule_AddObject(m, "FastSampler", (PyObject *)&FSType) < 0) {
        Py_DECREF(&FSType);
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "SINGLE", MODE_SINGLE);
    PyModule_AddIntConstant(m, "KV", MODE_KV);
    PyModule_AddIntConstant(m, "KB", MODE_KB);
    PyModule_AddIntConstant(m, "SUM", AGG_SUM);
    PyModule_AddIntConstant(m, "MAX", AGG_MAX);
    PyModule_AddObject(m, "MISSING", PyLong_FromLongLong(MISSING));
    return m;
}
