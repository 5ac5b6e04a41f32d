/* The two hottest loops of reading a .wandb log, compiled: an optional speed-up.
 *
 * Each function does exactly what a piece of Python in wandbfile.py / runlog.py does, for
 * the common case only, and hands everything else back to that Python: it stops (or
 * returns None) wherever the Python would leave its fast path. The package works without
 * this module (a machine with no compiler builds none); the tests run the readers both
 * ways and compare them.
 *
 *   frame(buf, pos, limit, tags, step_summaries, runtime_kind, summary_kind, seq,
 *         runtime_seq, base, done, out) -> (pos, done, seq, runtime_seq)
 *       The FULL-chunk loop of LogReader._batches: walks complete FULL chunks from
 *       ``pos`` up to ``limit`` (a block's end or the buffer's), appending a Record tuple
 *       to ``out`` for each one taken, and stops before the first chunk that loop would
 *       not settle on its fast path (another chunk type, a chunk past ``limit``, a bad
 *       checksum, a record whose kind needs record_kind, a length of three bytes or more).
 *
 *   history_row(data, start, end) -> (row, names) | None
 *       A HistoryRecord laid out as wandb-core writes nearly all of them: items
 *       ``0a L 0a|12 KL <key> 82 01 VL <json>`` with one-byte lengths, key and JSON bytes
 *       all >= 0x20, no key twice, then at most a step field ``12 L ...``. ``row`` is
 *       {raw key: raw JSON} in record order (what wandbitems.find_items finds on such a
 *       record), ``names`` the keys joined by b"\n". None for anything else.
 *
 *   steps(batch, i, shapes, rows, deferred, step_key) -> i
 *       LogRead.consume's loop over the pairs wandb-core writes for each logged step, a
 *       step summary then its history row (the next record): from ``batch[i]`` on, while
 *       the pairs are such and each row is plain, of a shape already in ``shapes`` and
 *       holds ``step_key``, appends the row to ``rows`` and defers the summary record
 *       under the shape's key set (``deferred[shapes[names][0]] = summary``). Returns
 *       the index of the first record it left; the caller has nothing pending then.
 *
 *   step_columns(batch, i, shapes, deferred, step_key, time_key, targets, steps, times) -> i
 *       The same loop, for rows whose step and time are plain decimals and whose wanted
 *       values float() reads as plain numbers: instead of keeping the row, appends its step
 *       to ``steps``, its time to ``times`` and each wanted value it holds to its column
 *       (``targets``: {raw key: (indexes, values)}, the index being the row's in
 *       ``steps``) — what LogRead._add_rows makes of such rows. It leaves a row that is
 *       not such to the Python whole: nothing of it is appended.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <zlib.h>

#define STEP_SUMMARY (-2)
#define HISTORY 2

static const unsigned char RUNTIME[] = "\x12\x06_wandb\x12\x07runtime\x82\x01";
#define RUNTIME_LEN ((Py_ssize_t)sizeof(RUNTIME) - 1)

static PyObject *
append_record(PyObject *out, long kind, PyObject *buf, Py_ssize_t start, Py_ssize_t end,
              Py_ssize_t unchecked, long long seq, long long offset)
{
    PyObject *record = Py_BuildValue("(lOnnnLL)", kind, buf, start, end, unchecked, seq, offset);
    if (record == NULL)
        return NULL;
    int failed = PyList_Append(out, record);
    Py_DECREF(record);
    return failed ? NULL : out;
}

static PyObject *
frame(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *buf, *out;
    Py_buffer tags_view;
    Py_ssize_t pos, limit, done;
    int step_summaries;
    long runtime_kind, summary_kind;
    long long seq, runtime_seq, base;
    if (!PyArg_ParseTuple(args, "O!nny*pllLLLnO!", &PyBytes_Type, &buf, &pos, &limit,
                          &tags_view, &step_summaries, &runtime_kind, &summary_kind, &seq,
                          &runtime_seq, &base, &done, &PyList_Type, &out))
        return NULL;
    PyObject *result = NULL;
    if (tags_view.len != 256) {
        PyErr_SetString(PyExc_ValueError, "tags must be 256 bytes");
        goto finally;
    }
    if (pos < 0) {
        PyErr_SetString(PyExc_ValueError, "pos must not be negative");
        goto finally;
    }
    const unsigned char *tags = tags_view.buf;
    const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(buf);
    Py_ssize_t avail = PyBytes_GET_SIZE(buf);
    if (limit > avail)
        limit = avail;
    while (pos + 7 <= limit) {
        if (pos + 13 > avail)
            break; /* the Python loop's struct.error: its slow path decides */
        const unsigned char *h = b + pos;
        unsigned long checksum = (unsigned long)h[0] | (unsigned long)h[1] << 8 |
                                 (unsigned long)h[2] << 16 | (unsigned long)h[3] << 24;
        Py_ssize_t length = (Py_ssize_t)h[4] | (Py_ssize_t)h[5] << 8;
        int ctype = h[6];
        Py_ssize_t start = pos + 7, end = start + length;
        if (end > limit || ctype != 1)
            break;
        int verdict = 0, tag = 0;
        Py_ssize_t p = end;
        if (h[7] == 8) {
            const unsigned char *n = h + 8; /* the record number's varint */
            if (n[0] < 128) { p = start + 2; tag = n[1]; }
            else if (n[1] < 128) { p = start + 3; tag = n[2]; }
            else if (n[2] < 128) { p = start + 4; tag = n[3]; }
            else if (n[3] < 128) { p = start + 5; tag = n[4]; }
            else { p = end; tag = 0; }
            if (p + 2 < end) {
                verdict = tags[tag];
                if (verdict == 1) {
                    seq += 1;
                    pos = done = end;
                    continue;
                }
                if (verdict == 3) {
                    if (end - p < 64 && p + 4 + RUNTIME_LEN <= avail &&
                        memcmp(b + p + 4, RUNTIME, RUNTIME_LEN) == 0) {
                        seq += 1;
                        runtime_seq = seq;
                        if (runtime_kind && !append_record(out, runtime_kind, buf, p + 2, end,
                                                           pos, seq, base + pos))
                            goto finally;
                        pos = done = end;
                        continue;
                    }
                    if (step_summaries && seq == runtime_seq) {
                        Py_ssize_t n1 = b[p + 1], q = 0;
                        if (n1 < 128) {
                            q = p + 2;
                        } else if (b[p + 2] < 128) {
                            n1 = (n1 & 127) | ((Py_ssize_t)b[p + 2] << 7);
                            q = p + 3;
                        }
                        if (q) {
                            seq += 1;
                            if (!append_record(out, STEP_SUMMARY, buf, q, q + n1, pos, seq,
                                               base + pos))
                                goto finally;
                            pos = done = end;
                            continue;
                        }
                    }
                }
            }
        }
        /* Past here the Python checks the checksum and takes the record; leave it the
         * records it would hand to record_kind, before touching anything. */
        if (verdict < 2 || (b[p + 1] >= 128 && b[p + 2] >= 128))
            break;
        if (crc32(0L, b + pos + 6, (uInt)(end - pos - 6)) != checksum)
            break;
        seq += 1;
        Py_ssize_t at = pos;
        pos = done = end;
        long kind = tag >> 3;
        if (verdict == 3) {
            if (step_summaries && seq == runtime_seq + 1)
                kind = STEP_SUMMARY;
            else if (!summary_kind)
                continue;
        }
        Py_ssize_t n1 = b[p + 1], q = p + 2;
        if (n1 >= 128) {
            n1 = (n1 & 127) | ((Py_ssize_t)b[p + 2] << 7);
            q = p + 3;
        }
        if (!append_record(out, kind, buf, q, q + n1, -1, seq, base + at))
            goto finally;
    }
    result = Py_BuildValue("(nnLL)", pos, done, seq, runtime_seq);
finally:
    PyBuffer_Release(&tags_view);
    return result;
}

static int
plain_text(const unsigned char *s, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if (s[i] < 0x20)
            return 0;
    return 1;
}

/* Whether b[start:end] is a plain HistoryRecord (see history_row): its item count and the
 * length of its names joined by newlines, plus one. Allocates nothing. */
static int
plain_layout(const unsigned char *b, Py_ssize_t start, Py_ssize_t end, Py_ssize_t *count,
             Py_ssize_t *names_len)
{
    Py_ssize_t p = start;
    *count = *names_len = 0;
    while (p < end && b[p] == 0x0a) {
        if (p + 2 > end || b[p + 1] >= 128)
            return 0;
        Py_ssize_t item_end = p + 2 + b[p + 1], q = p + 2;
        if (item_end > end || q + 2 > item_end || (b[q] != 0x0a && b[q] != 0x12) ||
            b[q + 1] >= 128)
            return 0;
        Py_ssize_t key = q + 2, key_len = b[q + 1], r = key + key_len;
        if (r + 3 > item_end || b[r] != 0x82 || b[r + 1] != 0x01 || b[r + 2] >= 128 ||
            r + 3 + b[r + 2] != item_end || !plain_text(b + key, key_len) ||
            !plain_text(b + r + 3, b[r + 2]))
            return 0;
        *count += 1;
        *names_len += key_len + 1;
        p = item_end;
    }
    Py_ssize_t rest = end - p;
    return !rest || (1 < rest && rest < 13 && b[p] == 0x12 && b[p + 1] == rest - 2);
}

/* The items of a plain HistoryRecord as (row, names), Py_None if it is not plain, NULL
 * on an error (memory). */
static PyObject *
plain_row(const unsigned char *b, Py_ssize_t start, Py_ssize_t end)
{
    /* First the layout, allocating nothing: most rows pass, the rest cost nothing. */
    Py_ssize_t p, count, names_len;
    if (!plain_layout(b, start, end, &count, &names_len))
        Py_RETURN_NONE;
    PyObject *row = PyDict_New(), *names = NULL, *key = NULL, *value = NULL;
    if (row == NULL)
        return NULL;
    names = PyBytes_FromStringAndSize(NULL, names_len ? names_len - 1 : 0);
    if (names == NULL)
        goto error;
    char *w = PyBytes_AS_STRING(names);
    for (p = start; count--;) {
        Py_ssize_t q = p + 2, key_len = b[q + 1], r = q + 2 + key_len, value_len = b[r + 2];
        key = PyBytes_FromStringAndSize((const char *)b + q + 2, key_len);
        value = PyBytes_FromStringAndSize((const char *)b + r + 3, value_len);
        if (key == NULL || value == NULL)
            goto error;
        int seen = PyDict_Contains(row, key);
        if (seen) { /* a key twice (or an error): the Python path decides */
            Py_DECREF(key);
            Py_DECREF(value);
            Py_DECREF(row);
            Py_DECREF(names);
            if (seen < 0)
                return NULL;
            Py_RETURN_NONE;
        }
        if (PyDict_SetItem(row, key, value) < 0)
            goto error;
        if (p != start)
            *w++ = '\n';
        memcpy(w, b + q + 2, key_len);
        w += key_len;
        Py_CLEAR(key);
        Py_CLEAR(value);
        p = r + 3 + value_len;
    }
    return Py_BuildValue("(NN)", row, names);
error:
    Py_XDECREF(key);
    Py_XDECREF(value);
    Py_XDECREF(names);
    Py_DECREF(row);
    return NULL;
}

static PyObject *
history_row(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *data;
    Py_ssize_t start, end;
    if (!PyArg_ParseTuple(args, "O!nn", &PyBytes_Type, &data, &start, &end))
        return NULL;
    if (start < 0 || end > PyBytes_GET_SIZE(data) || start > end)
        Py_RETURN_NONE;
    return plain_row((const unsigned char *)PyBytes_AS_STRING(data), start, end);
}

/* A Record tuple's field as a C integer; -1 with an error set if it is not one. */
static long long
field(PyObject *record, Py_ssize_t i)
{
    return PyLong_AsLongLong(PyTuple_GET_ITEM(record, i));
}

/* batch[i] and batch[i + 1] as wandb-core writes each logged step: a step summary, then
 * its history row as the next record. 1 with the summary record and the row's bytes and
 * bounds; 0 if they are not such a pair; -1 with an error set. */
static int
step_pair(PyObject *batch, Py_ssize_t i, PyObject **summary, PyObject **data,
          Py_ssize_t *start, Py_ssize_t *end)
{
    PyObject *first = PyList_GET_ITEM(batch, i), *history = PyList_GET_ITEM(batch, i + 1);
    if (!PyTuple_Check(first) || PyTuple_GET_SIZE(first) != 7 ||
        !PyTuple_Check(history) || PyTuple_GET_SIZE(history) != 7)
        return 0;
    long long summary_kind = field(first, 0), history_kind = field(history, 0);
    long long summary_seq = field(first, 5), history_seq = field(history, 5);
    if (PyErr_Occurred())
        return -1;
    if (summary_kind != STEP_SUMMARY || history_kind != HISTORY ||
        history_seq != summary_seq + 1)
        return 0;
    PyObject *bytes = PyTuple_GET_ITEM(history, 1);
    if (!PyBytes_Check(bytes))
        return 0;
    *start = PyLong_AsSsize_t(PyTuple_GET_ITEM(history, 2));
    *end = PyLong_AsSsize_t(PyTuple_GET_ITEM(history, 3));
    if (PyErr_Occurred())
        return -1;
    if (*start < 0 || *end > PyBytes_GET_SIZE(bytes) || *start > *end)
        return 0;
    *summary = first;
    *data = bytes;
    return 1;
}

static PyObject *
steps(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *batch, *shapes, *rows, *deferred, *step_key;
    Py_ssize_t i;
    if (!PyArg_ParseTuple(args, "O!nO!O!O!S", &PyList_Type, &batch, &i, &PyDict_Type,
                          &shapes, &PyList_Type, &rows, &PyDict_Type, &deferred, &step_key))
        return NULL;
    if (i < 0) {
        PyErr_SetString(PyExc_ValueError, "i must not be negative");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(batch);
    for (; i + 1 < n; i += 2) {
        PyObject *summary, *data;
        Py_ssize_t start, end;
        int pair = step_pair(batch, i, &summary, &data, &start, &end);
        if (pair < 0)
            return NULL;
        if (!pair)
            break;
        PyObject *plain = plain_row((const unsigned char *)PyBytes_AS_STRING(data), start, end);
        if (plain == NULL)
            return NULL;
        if (plain == Py_None) {
            Py_DECREF(plain);
            break;
        }
        PyObject *row = PyTuple_GET_ITEM(plain, 0), *names = PyTuple_GET_ITEM(plain, 1);
        PyObject *shape = PyDict_GetItemWithError(shapes, names); /* borrowed */
        int has_step = PyDict_Contains(row, step_key);
        if (shape == NULL || has_step != 1 || !PyTuple_Check(shape) ||
            PyTuple_GET_SIZE(shape) < 1) {
            Py_DECREF(plain);
            if (PyErr_Occurred())
                return NULL;
            break; /* a new shape, a row without _step: the Python path */
        }
        int failed = PyList_Append(rows, row) < 0 ||
                     PyDict_SetItem(deferred, PyTuple_GET_ITEM(shape, 0), summary) < 0;
        Py_DECREF(plain);
        if (failed)
            return NULL;
    }
    return PyLong_FromSsize_t(i);
}

/* A JSON number's text as float() reads it; 0 if float() might read it otherwise (it also
 * takes spaces and underscores: those values are left to the Python). */
static int
plain_double(const unsigned char *s, Py_ssize_t n, double *out)
{
    char text[128]; /* values here have one-byte lengths: under 128 */
    if (n <= 0 || n >= (Py_ssize_t)sizeof text)
        return 0;
    memcpy(text, s, n);
    text[n] = '\0';
    char *stop;
    double value = PyOS_string_to_double(text, &stop, NULL);
    if (value == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    if (stop != text + n)
        return 0;
    *out = value;
    return 1;
}

/* A step's text as int() reads it, for plain decimals of up to 18 digits; 0 otherwise. */
static int
plain_int(const unsigned char *s, Py_ssize_t n, long long *out)
{
    Py_ssize_t i = 0;
    int negative = n > 0 && s[0] == '-';
    i = negative;
    if (n - i < 1 || n - i > 18)
        return 0;
    long long value = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        value = value * 10 + (s[i] - '0');
    }
    *out = negative ? -value : value;
    return 1;
}

#define MAX_TARGETS 64

static int
append_new(PyObject *list, PyObject *item)
{
    if (item == NULL)
        return -1;
    int failed = PyList_Append(list, item);
    Py_DECREF(item);
    return failed;
}

static PyObject *
step_columns(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *batch, *shapes, *deferred, *step_key, *time_key, *targets, *steps_out, *times_out;
    Py_ssize_t i;
    if (!PyArg_ParseTuple(args, "O!nO!O!SSO!O!O!", &PyList_Type, &batch, &i, &PyDict_Type,
                          &shapes, &PyDict_Type, &deferred, &step_key, &time_key,
                          &PyDict_Type, &targets, &PyList_Type, &steps_out, &PyList_Type,
                          &times_out))
        return NULL;
    if (i < 0) {
        PyErr_SetString(PyExc_ValueError, "i must not be negative");
        return NULL;
    }
    /* The wanted keys as C strings, each with its (indexes, values) column. */
    const char *target_key[MAX_TARGETS];
    Py_ssize_t target_len[MAX_TARGETS];
    PyObject *target_indexes[MAX_TARGETS], *target_values[MAX_TARGETS];
    Py_ssize_t n_targets = 0, pos = 0;
    PyObject *key, *column;
    while (PyDict_Next(targets, &pos, &key, &column)) {
        if (n_targets == MAX_TARGETS || !PyBytes_Check(key) || !PyTuple_Check(column) ||
            PyTuple_GET_SIZE(column) != 2 || !PyList_Check(PyTuple_GET_ITEM(column, 0)) ||
            !PyList_Check(PyTuple_GET_ITEM(column, 1)))
            return PyLong_FromSsize_t(i); /* the Python decides everything */
        target_key[n_targets] = PyBytes_AS_STRING(key);
        target_len[n_targets] = PyBytes_GET_SIZE(key);
        target_indexes[n_targets] = PyTuple_GET_ITEM(column, 0);
        target_values[n_targets] = PyTuple_GET_ITEM(column, 1);
        n_targets++;
    }
    const char *step_s = PyBytes_AS_STRING(step_key), *time_s = PyBytes_AS_STRING(time_key);
    Py_ssize_t step_n = PyBytes_GET_SIZE(step_key), time_n = PyBytes_GET_SIZE(time_key);
    double found[MAX_TARGETS];
    char has[MAX_TARGETS];
    char names_buf[1024], last_names[1024];
    Py_ssize_t last_size = -1;
    PyObject *last_shape = NULL;
    Py_ssize_t n = PyList_GET_SIZE(batch);
    for (; i + 1 < n; i += 2) {
        PyObject *summary, *data;
        Py_ssize_t start, end;
        int pair = step_pair(batch, i, &summary, &data, &start, &end);
        if (pair < 0)
            return NULL;
        if (!pair)
            break;
        const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(data);
        Py_ssize_t count, names_len;
        if (!plain_layout(b, start, end, &count, &names_len))
            break;
        /* The row's shape, by its names (known shapes never repeat a key): written here,
         * looked up only when they differ from the last row's. */
        Py_ssize_t size = names_len ? names_len - 1 : 0;
        PyObject *names = NULL;
        char *w = names_buf;
        if (size > (Py_ssize_t)sizeof names_buf) {
            names = PyBytes_FromStringAndSize(NULL, size);
            if (names == NULL)
                return NULL;
            w = PyBytes_AS_STRING(names);
        }
        const char *names_at = w;
        long long step = 0;
        double when = 0.0;
        int has_step = 0, has_time = 0, plain = 1;
        memset(has, 0, (size_t)n_targets);
        Py_ssize_t p = start;
        for (Py_ssize_t k = 0; k < count; k++) {
            Py_ssize_t q = p + 2, key_len = b[q + 1], r = q + 2 + key_len, value_len = b[r + 2];
            const unsigned char *key_at = b + q + 2, *value_at = b + r + 3;
            if (k)
                *w++ = '\n';
            memcpy(w, key_at, key_len);
            w += key_len;
            p = r + 3 + value_len;
            if (!plain)
                continue;
            if (key_len == step_n && memcmp(key_at, step_s, step_n) == 0) {
                plain = plain_int(value_at, value_len, &step);
                has_step = 1;
            } else if (key_len == time_n && memcmp(key_at, time_s, time_n) == 0) {
                plain = plain_double(value_at, value_len, &when);
                has_time = 1;
            }
            /* The step or time may be wanted too (a rule on `step`): then also a column. */
            for (Py_ssize_t t = 0; plain && t < n_targets; t++) {
                if (key_len == target_len[t] && memcmp(key_at, target_key[t], key_len) == 0) {
                    plain = plain_double(value_at, value_len, &found[t]);
                    has[t] = 1;
                    break;
                }
            }
        }
        PyObject *shape = NULL; /* borrowed: shapes does not change during the call */
        if (plain && has_step && has_time) {
            if (names == NULL && last_shape != NULL && size == last_size &&
                memcmp(names_at, last_names, size) == 0) {
                shape = last_shape;
            } else {
                if (names == NULL)
                    names = PyBytes_FromStringAndSize(names_at, size);
                if (names == NULL)
                    return NULL;
                shape = PyDict_GetItemWithError(shapes, names);
                if (shape != NULL && size <= (Py_ssize_t)sizeof last_names) {
                    memcpy(last_names, names_at, size);
                    last_size = size;
                    last_shape = shape;
                }
            }
        }
        Py_XDECREF(names);
        if (shape == NULL || !PyTuple_Check(shape) || PyTuple_GET_SIZE(shape) < 1) {
            if (PyErr_Occurred())
                return NULL;
            break; /* a new shape, a row without _step or _timestamp, a value float() or
                      int() might read otherwise: the Python path */
        }
        Py_ssize_t index = PyList_GET_SIZE(steps_out);
        if (append_new(steps_out, PyLong_FromLongLong(step)) < 0 ||
            append_new(times_out, PyFloat_FromDouble(when)) < 0)
            return NULL;
        for (Py_ssize_t t = 0; t < n_targets; t++) {
            if (has[t] && (append_new(target_indexes[t], PyLong_FromSsize_t(index)) < 0 ||
                           append_new(target_values[t], PyFloat_FromDouble(found[t])) < 0))
                return NULL;
        }
        if (PyDict_SetItem(deferred, PyTuple_GET_ITEM(shape, 0), summary) < 0)
            return NULL;
    }
    return PyLong_FromSsize_t(i);
}

static PyMethodDef methods[] = {
    {"frame", frame, METH_VARARGS, "The FULL-chunk fast path of LogReader._batches."},
    {"history_row", history_row, METH_VARARGS, "A plain HistoryRecord's items, or None."},
    {"steps", steps, METH_VARARGS, "LogRead.consume's loop over (step summary, row) pairs."},
    {"step_columns", step_columns, METH_VARARGS,
     "steps, appending each row's step, time and wanted values to their columns."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_wandblog", "Compiled fast paths of the .wandb log reader.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__wandblog(void)
{
    return PyModule_Create(&module);
}
