/*
 * The byte work of the line-protocol and remote-write sinks, in C (collector/storage/lines.py
 * and remote_write.py say why).
 *
 * splice_lines(tokens, offsets, ids, numbers, whole, text, closes, stamps) -> bytes
 *
 *   tokens   bytes: every token of a catalog, back to back (a token opens a line:
 *            "measurement,tags field=", or continues one: ",field=")
 *   offsets  int64[k + 1]: token j is tokens[offsets[j]:offsets[j + 1]]
 *   ids      int64[n]: the token in front of each sample's value
 *   numbers  float64[n]: the samples' values
 *   whole    uint8[n]: 1 where the value is a whole number below 1e15 in magnitude (not -0.0):
 *            written here as its digits and ".0", which is what repr and orjson write for it
 *   text     bytes: the other values, in order, as one JSON array of numbers ("[0.5,1e-7]", as
 *            orjson writes a float64 array); each element is copied as it stands
 *   closes   uint8[n]: 1 where a sample is the last of its line
 *   stamps   int64[lines]: each line's timestamp, written as " <ts>\n" after its last value
 *
 *   The result is, per sample, its token and its value, and after a line's last value its tail.
 *
 * write_request(labels, offsets, series, starts, values, stamps) -> bytes
 *
 *   the remote-write sink's uncompressed WriteRequest (collector/storage/remote_write.py):
 *   labels   bytes: every series' encoded labels (repeated Label fields), back to back
 *   offsets  int64[k + 1]: series j's labels are labels[offsets[j]:offsets[j + 1]]
 *   series   int64[m]: the series of each TimeSeries
 *   starts   int64[m]: the first sample of each TimeSeries (ascending, starts[0] == 0); its
 *            samples run to the next start, the last one's to the end
 *   values   float64[n], stamps int64[n]: the samples (milliseconds)
 *
 *   Each TimeSeries is 0a <len> <labels> then per sample 12 <len> 09 <value, 8 bytes little
 *   endian> 10 <timestamp varint> (the protobuf wire format of proto/remote.proto).
 *
 * series_order(ids, n_series) -> bytes
 *
 *   int64 positions that group the samples by series id (0 <= id < n_series), keeping their
 *   order within each series: a stable counting sort, O(n + n_series).
 *
 * Every input is checked (lengths, ids, offsets): a bad call raises, it never reads or writes out
 * of bounds. The copying runs without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <math.h>
#include <string.h>

#define TAIL_MAX 22 /* " -9223372036854775808\n" */
#define VARINT_MAX 10

static int view(PyObject *obj, Py_buffer *buf, Py_ssize_t itemsize, const char *name)
{
    if (PyObject_GetBuffer(obj, buf, PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    if (buf->len % itemsize != 0) {
        PyErr_Format(PyExc_ValueError, "splice_lines: %s holds %zd bytes, not a whole number of %zd-byte items",
                     name, buf->len, itemsize);
        PyBuffer_Release(buf);
        return -1;
    }
    return 0;
}

static char *write_int64(char *p, int64_t v)
{
    char digits[20];
    int n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    if (v < 0)
        *p++ = '-';
    do {
        digits[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    while (n > 0)
        *p++ = digits[--n];
    return p;
}

static PyObject *splice_lines(PyObject *self, PyObject *args)
{
    enum { N_ARGS = 8 };
    PyObject *objs[N_ARGS];
    static const char *names[N_ARGS] = {"tokens", "offsets", "ids", "numbers", "whole", "text", "closes", "stamps"};
    static const Py_ssize_t sizes[N_ARGS] = {1, 8, 8, 8, 1, 1, 1, 8};
    Py_buffer bufs[N_ARGS];
    int held = 0;
    PyObject *out = NULL;
    (void)self;

    if (!PyArg_ParseTuple(args, "OOOOOOOO:splice_lines", &objs[0], &objs[1], &objs[2], &objs[3], &objs[4],
                          &objs[5], &objs[6], &objs[7]))
        return NULL;
    for (; held < N_ARGS; held++)
        if (view(objs[held], &bufs[held], sizes[held], names[held]) < 0)
            goto done;

    const char *tokens = bufs[0].buf;
    const int64_t *offsets = bufs[1].buf;
    const int64_t *ids = bufs[2].buf;
    const double *numbers = bufs[3].buf;
    const uint8_t *whole = bufs[4].buf;
    const char *text = bufs[5].buf;
    const uint8_t *closes = bufs[6].buf;
    const int64_t *stamps = bufs[7].buf;
    Py_ssize_t n_tokens = bufs[1].len / 8 - 1, n = bufs[2].len / 8, n_text = bufs[5].len;
    Py_ssize_t n_lines = bufs[7].len / 8;

    if (n_tokens < 0) {
        PyErr_SetString(PyExc_ValueError, "splice_lines: offsets is empty (it needs one more than the tokens)");
        goto done;
    }
    if (bufs[3].len / 8 != n || bufs[4].len != n || bufs[6].len != n) {
        PyErr_Format(PyExc_ValueError, "splice_lines: %zd numbers, %zd whole and %zd closes for %zd samples",
                     bufs[3].len / 8, bufs[4].len, bufs[6].len, n);
        goto done;
    }
    for (Py_ssize_t j = 0; j < n_tokens; j++) {
        if (offsets[j] < 0 || offsets[j] > offsets[j + 1] || offsets[j + 1] > bufs[0].len) {
            PyErr_Format(PyExc_ValueError, "splice_lines: token %zd spans %lld..%lld of %zd bytes", j,
                         (long long)offsets[j], (long long)offsets[j + 1], bufs[0].len);
            goto done;
        }
    }
    Py_ssize_t size = n_text, lines = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= n_tokens) {
            PyErr_Format(PyExc_ValueError, "splice_lines: sample %zd names token %lld of %zd", i,
                         (long long)ids[i], n_tokens);
            goto done;
        }
        size += offsets[ids[i] + 1] - offsets[ids[i]];
        if (whole[i]) {
            double x = numbers[i];
            if (!(x > -1e15 && x < 1e15) || (double)(int64_t)x != x || (x == 0 && signbit(x))) {
                PyErr_Format(PyExc_ValueError,
                             "splice_lines: sample %zd is marked whole but is not a whole number below 1e15", i);
                goto done;
            }
            size += 16 + 2; /* "-" and 15 digits, ".0" */
        }
        if (closes[i]) {
            lines++;
            size += TAIL_MAX;
        }
    }
    if (lines != n_lines) {
        PyErr_Format(PyExc_ValueError, "splice_lines: %zd lines end but %zd stamps were given", lines, n_lines);
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, size);
    if (out == NULL)
        goto done;

    char *start = PyBytes_AS_STRING(out), *p = start;
    Py_ssize_t at = (n_text > 0 && text[0] == '[') ? 1 : 0, line = 0, short_at = -1;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t length = offsets[ids[i] + 1] - offsets[ids[i]];
        memcpy(p, tokens + offsets[ids[i]], (size_t)length);
        p += length;
        if (whole[i]) {
            p = write_int64(p, (int64_t)numbers[i]);
            *p++ = '.';
            *p++ = '0';
        } else {
            Py_ssize_t end = at;
            while (end < n_text && text[end] != ',' && text[end] != ']')
                end++;
            if (end == at) { /* no value left for this sample */
                short_at = i;
                break;
            }
            memcpy(p, text + at, (size_t)(end - at));
            p += end - at;
            at = end + 1;
        }
        if (closes[i]) {
            *p++ = ' ';
            p = write_int64(p, stamps[line++]);
            *p++ = '\n';
        }
    }
    Py_END_ALLOW_THREADS
    if (short_at >= 0) {
        PyErr_Format(PyExc_ValueError, "splice_lines: text ends before sample %zd of %zd", short_at, n);
        Py_CLEAR(out);
        goto done;
    }
    if (at < n_text && text[at] != ']') { /* left over: more values in text than samples not whole */
        PyErr_Format(PyExc_ValueError, "splice_lines: text holds more values than the samples not whole");
        Py_CLEAR(out);
        goto done;
    }
    _PyBytes_Resize(&out, p - start); /* sets out to NULL (and the error) when it fails */

done:
    for (int i = 0; i < held; i++)
        PyBuffer_Release(&bufs[i]);
    return out;
}

static int varint_len(uint64_t v)
{
    int n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static unsigned char *write_varint(unsigned char *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    *p++ = (unsigned char)v;
    return p;
}

static PyObject *write_request(PyObject *self, PyObject *args)
{
    PyObject *objs[6];
    static const char *names[6] = {"labels", "offsets", "series", "starts", "values", "stamps"};
    static const Py_ssize_t sizes[6] = {1, 8, 8, 8, 8, 8};
    Py_buffer bufs[6];
    int held = 0;
    PyObject *out = NULL;
    (void)self;

    if (!PyArg_ParseTuple(args, "OOOOOO:write_request", &objs[0], &objs[1], &objs[2], &objs[3], &objs[4], &objs[5]))
        return NULL;
    for (; held < 6; held++)
        if (view(objs[held], &bufs[held], sizes[held], names[held]) < 0)
            goto done;

    const unsigned char *labels = bufs[0].buf;
    const int64_t *offsets = bufs[1].buf;
    const int64_t *series = bufs[2].buf;
    const int64_t *starts = bufs[3].buf;
    const double *values = bufs[4].buf;
    const int64_t *stamps = bufs[5].buf;
    Py_ssize_t n_series = bufs[1].len / 8 - 1, m = bufs[2].len / 8, n = bufs[4].len / 8;

    if (n_series < 0) {
        PyErr_SetString(PyExc_ValueError, "write_request: offsets is empty (it needs one more than the series)");
        goto done;
    }
    if (bufs[3].len != bufs[2].len || bufs[5].len != bufs[4].len) {
        PyErr_SetString(PyExc_ValueError, "write_request: series/starts or values/stamps differ in length");
        goto done;
    }
    if (m > 0 && starts[0] != 0) {
        PyErr_SetString(PyExc_ValueError, "write_request: the first TimeSeries must start at sample 0");
        goto done;
    }
    Py_ssize_t size = 0;
    for (Py_ssize_t s = 0; s < m; s++) {
        int64_t k = series[s], end = s + 1 < m ? starts[s + 1] : (int64_t)n;
        if (k < 0 || k >= n_series || offsets[k] < 0 || offsets[k] > offsets[k + 1] || offsets[k + 1] > bufs[0].len) {
            PyErr_Format(PyExc_ValueError, "write_request: TimeSeries %zd names series %lld, not one of the %zd given",
                         s, (long long)k, n_series);
            goto done;
        }
        if (starts[s] > end || end > n) {
            PyErr_Format(PyExc_ValueError, "write_request: TimeSeries %zd spans samples %lld..%lld of %zd", s,
                         (long long)starts[s], (long long)end, n);
            goto done;
        }
        size += 1 + VARINT_MAX + (offsets[k + 1] - offsets[k]) + (end - starts[s]) * (2 + 10 + VARINT_MAX);
    }
    out = PyBytes_FromStringAndSize(NULL, size);
    if (out == NULL)
        goto done;

    unsigned char *start = (unsigned char *)PyBytes_AS_STRING(out), *p = start;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t s = 0; s < m; s++) {
        int64_t k = series[s], first = starts[s], end = s + 1 < m ? starts[s + 1] : (int64_t)n;
        uint64_t body = (uint64_t)(offsets[k + 1] - offsets[k]);
        for (int64_t i = first; i < end; i++)
            body += 2 + 10 + (uint64_t)varint_len((uint64_t)stamps[i]);
        *p++ = 0x0a;
        p = write_varint(p, body);
        memcpy(p, labels + offsets[k], (size_t)(offsets[k + 1] - offsets[k]));
        p += offsets[k + 1] - offsets[k];
        for (int64_t i = first; i < end; i++) {
            uint64_t stamp = (uint64_t)stamps[i];
            *p++ = 0x12;
            *p++ = (unsigned char)(10 + varint_len(stamp)); /* at most 20: one byte */
            *p++ = 0x09;
            uint64_t bits;
            memcpy(&bits, &values[i], 8);
            for (int b = 0; b < 8; b++) /* little endian whatever the host */
                *p++ = (unsigned char)(bits >> (8 * b));
            *p++ = 0x10;
            p = write_varint(p, stamp);
        }
    }
    Py_END_ALLOW_THREADS
    _PyBytes_Resize(&out, (char *)p - (char *)start); /* sets out to NULL (and the error) when it fails */

done:
    for (int i = 0; i < held; i++)
        PyBuffer_Release(&bufs[i]);
    return out;
}

static PyObject *series_order(PyObject *self, PyObject *args)
{
    PyObject *obj;
    Py_ssize_t n_series;
    Py_buffer buf;
    (void)self;

    if (!PyArg_ParseTuple(args, "On:series_order", &obj, &n_series))
        return NULL;
    if (n_series < 0) {
        PyErr_SetString(PyExc_ValueError, "series_order: n_series is negative");
        return NULL;
    }
    if (view(obj, &buf, 8, "ids") < 0)
        return NULL;
    const int64_t *ids = buf.buf;
    Py_ssize_t n = buf.len / 8;
    PyObject *out = NULL;
    Py_ssize_t *next = PyMem_Calloc((size_t)n_series + 1, sizeof(Py_ssize_t));
    if (next == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= n_series) {
            PyErr_Format(PyExc_ValueError, "series_order: sample %zd names series %lld of %zd", i,
                         (long long)ids[i], n_series);
            goto done;
        }
        next[ids[i] + 1]++;
    }
    for (Py_ssize_t k = 0; k < n_series; k++) /* where each series' samples start */
        next[k + 1] += next[k];
    out = PyBytes_FromStringAndSize(NULL, n * 8);
    if (out == NULL)
        goto done;
    int64_t *order = (int64_t *)PyBytes_AS_STRING(out);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++)
        order[next[ids[i]]++] = i;
    Py_END_ALLOW_THREADS

done:
    PyMem_Free(next);
    PyBuffer_Release(&buf);
    return out;
}

static PyMethodDef methods[] = {
    {"splice_lines", splice_lines, METH_VARARGS,
     "splice_lines(tokens, offsets, ids, numbers, whole, text, closes, stamps) -> bytes: line protocol from "
     "tokens and values (see collector/storage/lines.py)"},
    {"write_request", write_request, METH_VARARGS,
     "write_request(labels, offsets, series, starts, values, stamps) -> bytes: an uncompressed remote-write "
     "WriteRequest (see collector/storage/remote_write.py)"},
    {"series_order", series_order, METH_VARARGS,
     "series_order(ids, n_series) -> bytes: int64 positions of the samples grouped by series id, in their "
     "order within each series (a stable counting sort; see collector/storage/remote_write.py)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "collector.storage._native",
    "The sinks' byte work in C (collector/storage/lines.py, remote_write.py).", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void)
{
    return PyModule_Create(&module);
}
