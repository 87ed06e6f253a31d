/* The reader's per-event hot loops in C: the twin of _decode.py's batch
 * loop (_make_fast) and of _typed.py's Typer handlers.
 *
 * Everything here must give exactly what the pure-Python code gives: the
 * same records, the same Event objects (same classes, enum members and
 * values), the same state in the Typer's dicts and sets. Where the Python
 * code would reject a batch, batch() says so (returns False) and the
 * Python code explains the fault (Decoder._diagnose), so error messages
 * have one source. setup() receives every class, enum member and table
 * from Python; nothing about the format is hard-coded here.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* ---- The tables, from setup() ---------------------------------------- */

enum { A_INT = 0, A_STRING = 1, A_STACK = 2, A_NUMBER = 3, A_ENUM = 4 };

#define NCODES 64
#define MAXARGS 8

typedef struct {
    int nargs; /* -1: not an event type a batch may hold */
    unsigned char kind[MAXARGS];
    long long limit[MAXARGS]; /* A_ENUM: valid values are 0..limit-1 */
    int end_code;             /* a step's second transition, or -1 */
    PyObject *code;           /* the int stored in a record */
    PyObject *end;            /* the int stored in its second transition's */
} Spec;

static Spec specs[NCODES];

enum {
    H_NONE = 0,
    H_LOST,
    H_METRIC,
    H_LABEL,
    H_SAMPLE,
    H_RANGE_BEGIN,
    H_RANGE_ACTIVE,
    H_RANGE_END,
    H_TASK_BEGIN,
    H_TASK_END,
    H_REGION_BEGIN,
    H_REGION_END,
    H_LOG,
    H_CREATE,
    H_START,
    H_BLOCK,
    H_YIELD,
    H_UNBLOCK,
    H_END,
    H_STATUS,
    H_WAITING,
    H_LOOP_STATUS,
    H_LOOP_RUN,
    H_LOOP_IDLE,
    H_LOOP_DESTROY,
};

static const char *handler_names[] = {
    "",          "EventsLost",  "Metric",      "Label",       "StackSample",
    "RangeBegin", "RangeActive", "RangeEnd",   "TaskBegin",   "TaskEnd",
    "RegionBegin", "RegionEnd",  "Log",        "CoroCreate",  "CoroStart",
    "CoroBlock",  "CoroYield",   "CoroUnblock", "CoroEnd",    "CoroStatus",
    "CoroWaiting", "LoopStatus", "LoopRun",    "LoopIdle",    "LoopDestroy",
};
#define NHANDLERS ((int)(sizeof(handler_names) / sizeof(handler_names[0])))

static unsigned char handlers[2 * NCODES];

/* Classes and constants. */
static PyTypeObject *T_Event, *T_Metric, *T_Label, *T_Range, *T_Task, *T_Region,
    *T_Log, *T_StateTransition, *T_ResourceID;
static PyObject *K_METRIC, *K_LABEL, *K_STACK_SAMPLE, *K_RANGE_BEGIN,
    *K_RANGE_ACTIVE, *K_RANGE_END, *K_TASK_BEGIN, *K_TASK_END, *K_REGION_BEGIN,
    *K_REGION_END, *K_LOG, *K_ST;
static PyObject *resource_kinds; /* tuple: ResourceKind members by value */
static PyObject *coro_states;    /* tuple: CoroState members by value */
static PyObject *loop_states;    /* tuple: LoopState members by value */
static PyObject *NO_STACK, *NO_COROUTINE, *NO_LOOP, *NO_TASK, *LOST_METRIC,
    *S_EMPTY, *S_YIELD, *ZERO, *S_LOST_EVENTS;
static Py_ssize_t MAX_OPEN_TASKS;
static int ready = 0;

/* CoroState / LoopState / ResourceKind values used below. */
enum { CS_UNDETERMINED = 0, CS_NOT_EXIST, CS_RUNNABLE, CS_RUNNING, CS_WAITING };
enum { LS_UNDETERMINED = 0, LS_NOT_EXIST, LS_RUNNING, LS_IDLE };
enum { RK_NONE = 0, RK_COROUTINE, RK_LOOP, RK_THREAD };

#define CORO_STATE(i) PyTuple_GET_ITEM(coro_states, (i))
#define LOOP_STATE(i) PyTuple_GET_ITEM(loop_states, (i))
#define RES_KIND(i) PyTuple_GET_ITEM(resource_kinds, (i))

static PyObject *
get_required(PyObject *kw, const char *name)
{
    PyObject *v = PyDict_GetItemString(kw, name); /* borrowed */
    if (v == NULL) {
        PyErr_Format(PyExc_KeyError, "setup() needs %s", name);
        return NULL;
    }
    Py_INCREF(v);
    return v;
}

static int
get_type(PyObject *kw, const char *name, PyTypeObject **out)
{
    PyObject *v = get_required(kw, name);
    if (v == NULL)
        return -1;
    if (!PyType_Check(v) || !PyType_IsSubtype((PyTypeObject *)v, &PyTuple_Type) ||
        ((PyTypeObject *)v)->tp_itemsize != sizeof(PyObject *) ||
        ((PyTypeObject *)v)->tp_dictoffset != 0) {
        Py_DECREF(v);
        PyErr_Format(PyExc_TypeError, "setup(): %s must be a tuple subclass "
                                      "without instance attributes", name);
        return -1;
    }
    *out = (PyTypeObject *)v;
    return 0;
}

static int
get_obj(PyObject *kw, const char *name, PyObject **out)
{
    PyObject *v = get_required(kw, name);
    if (v == NULL)
        return -1;
    *out = v;
    return 0;
}

static int
get_members(PyObject *kw, const char *name, Py_ssize_t n, PyObject **out)
{
    PyObject *v = get_required(kw, name);
    if (v == NULL)
        return -1;
    if (!PyTuple_CheckExact(v) || PyTuple_GET_SIZE(v) != n) {
        Py_DECREF(v);
        PyErr_Format(PyExc_TypeError, "setup(): %s must be a tuple of %zd", name,
                     n);
        return -1;
    }
    *out = v;
    return 0;
}

/* setup(**constants): takes the classes, enum members and tables. Called
 * once, by aiotrace.reader._impl; later calls do nothing. */
static PyObject *
cd_setup(PyObject *self, PyObject *args, PyObject *kw)
{
    if (ready)
        Py_RETURN_NONE;
    if (kw == NULL || PyTuple_GET_SIZE(args) != 0) {
        PyErr_SetString(PyExc_TypeError, "setup() takes keyword arguments only");
        return NULL;
    }
    if (get_type(kw, "Event", &T_Event) || get_type(kw, "Metric", &T_Metric) ||
        get_type(kw, "Label", &T_Label) || get_type(kw, "Range", &T_Range) ||
        get_type(kw, "Task", &T_Task) || get_type(kw, "Region", &T_Region) ||
        get_type(kw, "Log", &T_Log) ||
        get_type(kw, "StateTransition", &T_StateTransition) ||
        get_type(kw, "ResourceID", &T_ResourceID))
        return NULL;
    if (get_obj(kw, "METRIC", &K_METRIC) || get_obj(kw, "LABEL", &K_LABEL) ||
        get_obj(kw, "STACK_SAMPLE", &K_STACK_SAMPLE) ||
        get_obj(kw, "RANGE_BEGIN", &K_RANGE_BEGIN) ||
        get_obj(kw, "RANGE_ACTIVE", &K_RANGE_ACTIVE) ||
        get_obj(kw, "RANGE_END", &K_RANGE_END) ||
        get_obj(kw, "TASK_BEGIN", &K_TASK_BEGIN) ||
        get_obj(kw, "TASK_END", &K_TASK_END) ||
        get_obj(kw, "REGION_BEGIN", &K_REGION_BEGIN) ||
        get_obj(kw, "REGION_END", &K_REGION_END) || get_obj(kw, "LOG", &K_LOG) ||
        get_obj(kw, "STATE_TRANSITION", &K_ST) ||
        get_obj(kw, "NO_STACK", &NO_STACK) ||
        get_obj(kw, "NO_COROUTINE", &NO_COROUTINE) ||
        get_obj(kw, "NO_LOOP", &NO_LOOP) || get_obj(kw, "NO_TASK", &NO_TASK) ||
        get_obj(kw, "LOST_METRIC", &LOST_METRIC))
        return NULL;
    if (get_members(kw, "resource_kinds", 4, &resource_kinds) ||
        get_members(kw, "coro_states", 5, &coro_states) ||
        get_members(kw, "loop_states", 4, &loop_states))
        return NULL;
    PyObject *max_open = PyDict_GetItemString(kw, "MAX_OPEN_TASKS");
    if (max_open == NULL || !PyLong_Check(max_open)) {
        PyErr_SetString(PyExc_TypeError, "setup() needs MAX_OPEN_TASKS");
        return NULL;
    }
    MAX_OPEN_TASKS = PyLong_AsSsize_t(max_open);
    if (MAX_OPEN_TASKS < 2) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "MAX_OPEN_TASKS must be >= 2");
        return NULL;
    }
    S_EMPTY = PyUnicode_FromString("");
    S_YIELD = PyUnicode_InternFromString("yield");
    S_LOST_EVENTS = PyUnicode_InternFromString("lost_events");
    ZERO = PyLong_FromLong(0);
    if (!S_EMPTY || !S_YIELD || !S_LOST_EVENTS || !ZERO)
        return NULL;

    /* specs: a list indexed by code of None or (kinds, limits, end_code) */
    PyObject *table = PyDict_GetItemString(kw, "specs");
    if (table == NULL || !PyList_CheckExact(table) ||
        PyList_GET_SIZE(table) > NCODES) {
        PyErr_SetString(PyExc_TypeError, "setup() needs specs, a list");
        return NULL;
    }
    for (int code = 0; code < NCODES; code++) {
        specs[code].nargs = -1;
        specs[code].end_code = -1;
        specs[code].code = NULL;
        specs[code].end = NULL;
    }
    for (Py_ssize_t code = 0; code < PyList_GET_SIZE(table); code++) {
        PyObject *entry = PyList_GET_ITEM(table, code);
        if (entry == Py_None)
            continue;
        PyObject *kinds, *limits;
        int end_code;
        if (!PyArg_ParseTuple(entry, "O!O!i", &PyTuple_Type, &kinds, &PyTuple_Type,
                              &limits, &end_code))
            return NULL;
        Py_ssize_t n = PyTuple_GET_SIZE(kinds);
        if (n > MAXARGS || PyTuple_GET_SIZE(limits) != n || end_code >= 2 * NCODES) {
            PyErr_SetString(PyExc_ValueError, "setup(): a bad spec");
            return NULL;
        }
        Spec *s = &specs[code];
        for (Py_ssize_t i = 0; i < n; i++) {
            long k = PyLong_AsLong(PyTuple_GET_ITEM(kinds, i));
            long long lim = PyLong_AsLongLong(PyTuple_GET_ITEM(limits, i));
            if (PyErr_Occurred())
                return NULL;
            if (k < A_INT || k > A_ENUM) {
                PyErr_SetString(PyExc_ValueError, "setup(): a bad argument kind");
                return NULL;
            }
            s->kind[i] = (unsigned char)k;
            s->limit[i] = lim;
        }
        if (end_code >= 0 && n < 2) {
            PyErr_SetString(PyExc_ValueError, "setup(): a step needs 2 arguments");
            return NULL;
        }
        s->code = PyLong_FromSsize_t(code);
        if (s->code == NULL)
            return NULL;
        if (end_code >= 0) {
            s->end = PyLong_FromLong(end_code);
            if (s->end == NULL)
                return NULL;
        }
        s->end_code = end_code;
        s->nargs = (int)n;
    }

    /* handlers: a list indexed by record code of None or a handler name */
    PyObject *names = PyDict_GetItemString(kw, "handlers");
    if (names == NULL || !PyList_CheckExact(names) ||
        PyList_GET_SIZE(names) > 2 * NCODES) {
        PyErr_SetString(PyExc_TypeError, "setup() needs handlers, a list");
        return NULL;
    }
    memset(handlers, 0, sizeof(handlers));
    for (Py_ssize_t code = 0; code < PyList_GET_SIZE(names); code++) {
        PyObject *name = PyList_GET_ITEM(names, code);
        if (name == Py_None)
            continue;
        const char *s = PyUnicode_AsUTF8(name);
        if (s == NULL)
            return NULL;
        int h;
        for (h = 1; h < NHANDLERS; h++)
            if (strcmp(s, handler_names[h]) == 0)
                break;
        if (h == NHANDLERS) {
            PyErr_Format(PyExc_ValueError, "setup(): no handler %s", s);
            return NULL;
        }
        handlers[code] = (unsigned char)h;
    }
    ready = 1;
    Py_RETURN_NONE;
}

/* ---- Batches ----------------------------------------------------------- */

/* The code of an event's type, as _FAST's dict lookup finds it (an int or
 * an equal float), or -1 for one that lookup would not find. */
static int
event_code(PyObject *o)
{
    long v;
    if (PyLong_Check(o)) {
        int overflow;
        v = PyLong_AsLongAndOverflow(o, &overflow);
        if (v == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return -1;
        }
        if (overflow)
            return -1;
    }
    else if (PyFloat_CheckExact(o)) {
        double d = PyFloat_AS_DOUBLE(o);
        if (!(d >= 0 && d < NCODES))
            return -1;
        v = (long)d;
        if ((double)v != d)
            return -1;
    }
    else {
        return -1;
    }
    if (v < 0 || v >= NCODES || specs[v].nargs < 0)
        return -1;
    return (int)v;
}

/* An exact int's value, if it fits; sets *ok = 0 if not. */
static long long
small_int(PyObject *o, int *ok)
{
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow || (v == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        *ok = 0;
        return 0;
    }
    *ok = 1;
    return v;
}

/* a + b for exact ints. */
static PyObject *
add_ints(PyObject *a, PyObject *b)
{
    int oka, okb;
    long long x = small_int(a, &oka), y = small_int(b, &okb), r;
    if (oka && okb && !__builtin_add_overflow(x, y, &r))
        return PyLong_FromLongLong(r);
    return PyNumber_Add(a, b);
}

/* batch(payload, strings, nstacks, out) -> bool
 *
 * Checks the events of a BATCH payload (a tuple: thread, base_time, events)
 * and appends their records to ``out`` as _decode's fast path does. Returns
 * False at the first event the fast path would reject (the records of the
 * events before it are appended), True if every event is good. */
static PyObject *
cd_batch(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!ready) {
        PyErr_SetString(PyExc_RuntimeError, "_cdecode.setup() was not called");
        return NULL;
    }
    if (nargs != 4 || !PyTuple_CheckExact(args[0]) || !PyList_CheckExact(args[1]) ||
        !PyList_CheckExact(args[3])) {
        PyErr_SetString(PyExc_TypeError,
                        "batch(payload: tuple, strings: list, nstacks: int, out: list)");
        return NULL;
    }
    PyObject *payload = args[0], *strings = args[1], *out = args[3];
    Py_ssize_t nstacks = PyLong_AsSsize_t(args[2]);
    if (nstacks == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(payload);
    if (n < 2 || !PyLong_CheckExact(PyTuple_GET_ITEM(payload, 0)) ||
        !PyLong_CheckExact(PyTuple_GET_ITEM(payload, 1))) {
        PyErr_SetString(PyExc_ValueError, "batch(): payload must start with 2 ints");
        return NULL;
    }
    PyObject *thread = PyTuple_GET_ITEM(payload, 0);
    PyObject *t = PyTuple_GET_ITEM(payload, 1);
    Py_INCREF(t);
    PyObject *vals[MAXARGS];
    int good = 1;
    for (Py_ssize_t i = 2; i < n; i++) {
        PyObject *ev = PyTuple_GET_ITEM(payload, i);
        if (!PyTuple_CheckExact(ev) || PyTuple_GET_SIZE(ev) < 2) {
            good = 0;
            break;
        }
        int code = event_code(PyTuple_GET_ITEM(ev, 0));
        if (code < 0) {
            good = 0;
            break;
        }
        const Spec *s = &specs[code];
        int na = s->nargs;
        PyObject *dt = PyTuple_GET_ITEM(ev, 1);
        if (PyTuple_GET_SIZE(ev) != na + 2 || !PyLong_CheckExact(dt)) {
            good = 0;
            break;
        }
        for (int j = 0; j < na && good; j++) {
            PyObject *a = PyTuple_GET_ITEM(ev, j + 2);
            vals[j] = a;
            if (s->kind[j] == A_NUMBER) {
                if (!PyLong_CheckExact(a) && !PyFloat_CheckExact(a))
                    good = 0;
                continue;
            }
            if (!PyLong_CheckExact(a)) {
                good = 0;
                break;
            }
            if (s->kind[j] == A_INT)
                continue;
            int ok;
            long long v = small_int(a, &ok);
            if (!ok || v < 0) {
                good = 0;
                break;
            }
            switch (s->kind[j]) {
            case A_STRING:
                if (v >= PyList_GET_SIZE(strings))
                    good = 0;
                else
                    vals[j] = PyList_GET_ITEM(strings, (Py_ssize_t)v);
                break;
            case A_STACK:
                if (v >= nstacks)
                    good = 0;
                break;
            default: /* A_ENUM */
                if (v >= s->limit[j])
                    good = 0;
                break;
            }
        }
        if (!good)
            break;
        PyObject *nt = add_ints(t, dt);
        if (nt == NULL)
            goto error;
        Py_SETREF(t, nt);
        PyObject *rec = PyTuple_New(3 + na);
        if (rec == NULL)
            goto error;
        Py_INCREF(t);
        PyTuple_SET_ITEM(rec, 0, t);
        Py_INCREF(thread);
        PyTuple_SET_ITEM(rec, 1, thread);
        Py_INCREF(s->code);
        PyTuple_SET_ITEM(rec, 2, s->code);
        for (int j = 0; j < na; j++) {
            Py_INCREF(vals[j]);
            PyTuple_SET_ITEM(rec, 3 + j, vals[j]);
        }
        /* Only ints, floats and strs: the collector would untrack it at
         * its first pass (as it does the Python twin's records); untracked
         * now, a generation held for sorting costs it nothing. */
        PyObject_GC_UnTrack(rec);
        int r = PyList_Append(out, rec);
        Py_DECREF(rec);
        if (r < 0)
            goto error;
        if (s->end_code >= 0) {
            /* A step: its second transition, ``duration`` (vals[1]) later,
             * with the arguments after it (or stack 0). */
            Py_ssize_t rest = na - 2;
            PyObject *end = PyTuple_New(4 + (rest ? rest : 1));
            if (end == NULL)
                goto error;
            PyObject *et = add_ints(t, vals[1]);
            if (et == NULL) {
                Py_DECREF(end);
                goto error;
            }
            PyTuple_SET_ITEM(end, 0, et);
            Py_INCREF(thread);
            PyTuple_SET_ITEM(end, 1, thread);
            Py_INCREF(s->end);
            PyTuple_SET_ITEM(end, 2, s->end);
            Py_INCREF(vals[0]);
            PyTuple_SET_ITEM(end, 3, vals[0]);
            if (rest) {
                for (Py_ssize_t j = 0; j < rest; j++) {
                    Py_INCREF(vals[2 + j]);
                    PyTuple_SET_ITEM(end, 4 + j, vals[2 + j]);
                }
            }
            else {
                Py_INCREF(ZERO);
                PyTuple_SET_ITEM(end, 4, ZERO);
            }
            PyObject_GC_UnTrack(end);
            r = PyList_Append(out, end);
            Py_DECREF(end);
            if (r < 0)
                goto error;
        }
    }
    Py_DECREF(t);
    return PyBool_FromLong(good);
error:
    Py_DECREF(t);
    return NULL;
}

/* ---- Sorting a generation by time ---------------------------------------- */

/* sort_by_time(records) -> bool
 *
 * Sorts a generation's records by their time (item 0), stably, as
 * ``records.sort(key=itemgetter(0))`` does, and returns True; returns False,
 * having changed nothing, if a time is not an int that fits in 64 bits (the
 * caller then sorts in Python). Merges the runs the batches already form:
 * keys and indexes are machine words, so no Python comparison runs. */
static PyObject *
cd_sort_by_time(PyObject *self, PyObject *list)
{
    if (!PyList_CheckExact(list)) {
        PyErr_SetString(PyExc_TypeError, "sort_by_time() needs a list");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(list);
    if (n < 2)
        Py_RETURN_TRUE;
    if ((size_t)n > (size_t)UINT32_MAX)
        Py_RETURN_FALSE;
    long long *keys = PyMem_Malloc((size_t)n * sizeof(long long));
    uint32_t *idx = PyMem_Malloc((size_t)n * sizeof(uint32_t));
    uint32_t *tmp = PyMem_Malloc((size_t)n * sizeof(uint32_t));
    Py_ssize_t *runs = PyMem_Malloc(((size_t)n + 1) * sizeof(Py_ssize_t));
    PyObject *result = NULL;
    if (!keys || !idx || !tmp || !runs) {
        PyErr_NoMemory();
        goto done;
    }
    int sorted = 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *rec = PyList_GET_ITEM(list, i);
        int ok = 0;
        if (PyTuple_Check(rec) && PyTuple_GET_SIZE(rec) > 0 &&
            PyLong_CheckExact(PyTuple_GET_ITEM(rec, 0)))
            keys[i] = small_int(PyTuple_GET_ITEM(rec, 0), &ok);
        if (!ok) {
            result = Py_False;
            goto done;
        }
        idx[i] = (uint32_t)i;
        if (i && keys[i] < keys[i - 1])
            sorted = 0;
    }
    if (sorted) {
        result = Py_True;
        goto done;
    }
    /* The ascending runs, then merge neighbours until one is left. */
    Py_ssize_t nruns = 0;
    runs[nruns++] = 0;
    for (Py_ssize_t i = 1; i < n; i++)
        if (keys[i] < keys[i - 1])
            runs[nruns++] = i;
    runs[nruns] = n;
    uint32_t *src = idx, *dst = tmp;
    while (nruns > 1) {
        Py_ssize_t out = 0;
        for (Py_ssize_t r = 0; r < nruns; r += 2) {
            Py_ssize_t lo = runs[r], mid = runs[r + 1],
                       hi = r + 2 <= nruns ? runs[r + 2] : runs[r + 1];
            Py_ssize_t a = lo, b = mid, k = lo;
            while (a < mid && b < hi) /* stable: the left run wins ties */
                dst[k++] = keys[src[b]] < keys[src[a]] ? src[b++] : src[a++];
            while (a < mid)
                dst[k++] = src[a++];
            while (b < hi)
                dst[k++] = src[b++];
            runs[out++] = lo;
        }
        runs[out] = n;
        nruns = out;
        uint32_t *t = src;
        src = dst;
        dst = t;
    }
    /* Permute the list's items (a permutation: no reference changes). */
    PyObject **items = ((PyListObject *)list)->ob_item;
    PyObject **copy = (PyObject **)keys; /* the keys are no longer needed */
    Py_BUILD_ASSERT(sizeof(long long) >= sizeof(PyObject *));
    for (Py_ssize_t i = 0; i < n; i++)
        copy[i] = items[src[i]];
    memcpy(items, copy, (size_t)n * sizeof(PyObject *));
    result = Py_True;
done:
    PyMem_Free(keys);
    PyMem_Free(idx);
    PyMem_Free(tmp);
    PyMem_Free(runs);
    Py_XINCREF(result);
    return result;
}

/* ---- The typer ---------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *records; /* list of flat tuples, sorted */
    Py_ssize_t pos;
    PyObject *ctx;    /* thread -> [loop, coroutine, outer coroutines] */
    PyObject *loops;  /* loop -> LoopState */
    PyObject *coros;  /* coroutine -> CoroState */
    PyObject *labels; /* (kind, id) -> label */
    PyObject *open;   /* set of open (name, scope_kind, scope_id) */
    PyObject *tasks;  /* task -> (parent, type) */
    PyObject *stacks; /* the generation's stack table */
    PyObject *typer;  /* for lost_events */
    PyObject *first;  /* the Event to yield first (the SYNC), or NULL */
    PyObject *done;   /* called once the records are exhausted, or NULL */
} TypeIter;

/* A tuple (or tuple subclass) of n items; the items are borrowed. */
static PyObject *
tup(PyTypeObject *tp, Py_ssize_t n, PyObject *const *items)
{
    PyObject *o = tp == &PyTuple_Type ? PyTuple_New(n) : tp->tp_alloc(tp, n);
    if (o == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_INCREF(items[i]);
        PyTuple_SET_ITEM(o, i, items[i]);
    }
    return o;
}

/* Event(kind, time, c[1], c[0], thread, stack, details); steals details. */
static PyObject *
event(PyObject *kind, PyObject *ev, PyObject *c, PyObject *stack, PyObject *d)
{
    if (d == NULL)
        return NULL;
    PyObject *items[7] = {kind,  PyTuple_GET_ITEM(ev, 0), PyList_GET_ITEM(c, 1),
                          PyList_GET_ITEM(c, 0), PyTuple_GET_ITEM(ev, 1), stack, d};
    PyObject *out = tup(T_Event, 7, items);
    Py_DECREF(d);
    return out;
}

static PyObject *
resource(int kind, PyObject *id)
{
    PyObject *items[2] = {RES_KIND(kind), id};
    return tup(T_ResourceID, 2, items);
}

/* StateTransition(ResourceID(kind, id), reason, stack, old, new) */
static PyObject *
transition(int kind, PyObject *id, PyObject *reason, PyObject *stack, PyObject *old,
           PyObject *new)
{
    PyObject *r = resource(kind, id);
    if (r == NULL)
        return NULL;
    PyObject *items[5] = {r, reason, stack, old, new};
    PyObject *d = tup(T_StateTransition, 5, items);
    Py_DECREF(r);
    return d;
}

static PyObject *
stack_of(TypeIter *it, PyObject *id)
{
    Py_ssize_t i = PyLong_AsSsize_t(id);
    if (i == -1 && PyErr_Occurred())
        return NULL;
    if (!PyList_Check(it->stacks) || i < 0 || i >= PyList_GET_SIZE(it->stacks)) {
        PyErr_SetString(PyExc_IndexError, "stack id out of range");
        return NULL;
    }
    return PyList_GET_ITEM(it->stacks, i); /* borrowed */
}

static int
small_enum(PyObject *v, Py_ssize_t n)
{
    long i = PyLong_AsLong(v);
    if (i == -1 && PyErr_Occurred())
        return -1;
    if (i < 0 || i >= n) {
        PyErr_Format(PyExc_ValueError, "%ld is not a valid enum value", i);
        return -1;
    }
    return (int)i;
}

static int
discard(PyObject *dict, PyObject *key)
{
    if (PyDict_DelItem(dict, key) == 0)
        return 0;
    if (PyErr_ExceptionMatches(PyExc_KeyError)) {
        PyErr_Clear();
        return 0;
    }
    return -1;
}

static int
set_coro(TypeIter *it, PyObject *coro, int state)
{
    return PyDict_SetItem(it->coros, coro, CORO_STATE(state));
}

/* c[1] == coro (or a comparison with NO_COROUTINE) */
static int
same(PyObject *a, PyObject *b)
{
    return a == b ? 1 : PyObject_RichCompareBool(a, b, Py_EQ);
}

/* _leave: c[1] = c[2].pop() if c[2] else NO_COROUTINE */
static int
leave(PyObject *c)
{
    PyObject *outer = PyList_GET_ITEM(c, 2);
    if (!PyList_Check(outer)) {
        PyErr_SetString(PyExc_TypeError, "a thread's context is broken");
        return -1;
    }
    Py_ssize_t n = PyList_GET_SIZE(outer);
    PyObject *v;
    if (n) {
        v = PyList_GET_ITEM(outer, n - 1);
        Py_INCREF(v);
        if (PyList_SetSlice(outer, n - 1, n, NULL) < 0) {
            Py_DECREF(v);
            return -1;
        }
    }
    else {
        v = NO_COROUTINE;
        Py_INCREF(v);
    }
    return PyList_SetItem(c, 1, v); /* steals v */
}

/* enter: if c[1] != NO_COROUTINE: c[2].append(c[1]); c[1] = coro */
static int
enter(PyObject *c, PyObject *coro)
{
    PyObject *cur = PyList_GET_ITEM(c, 1);
    int r = same(cur, NO_COROUTINE);
    if (r < 0)
        return -1;
    if (!r) {
        PyObject *outer = PyList_GET_ITEM(c, 2);
        if (!PyList_Check(outer)) {
            PyErr_SetString(PyExc_TypeError, "a thread's context is broken");
            return -1;
        }
        if (PyList_Append(outer, cur) < 0)
            return -1;
    }
    Py_INCREF(coro);
    return PyList_SetItem(c, 1, coro);
}

#define ARG(i) PyTuple_GET_ITEM(ev, (i))

static PyObject *
h_metric(TypeIter *it, PyObject *ev, PyObject *c)
{
    PyObject *items[2] = {ARG(3), ARG(4)};
    return event(K_METRIC, ev, c, NO_STACK, tup(T_Metric, 2, items));
}

static PyObject *
h_lost(TypeIter *it, PyObject *ev, PyObject *c)
{
    PyObject *lost = PyObject_GetAttr(it->typer, S_LOST_EVENTS);
    if (lost == NULL)
        return NULL;
    PyObject *sum = PyNumber_Add(lost, ARG(3));
    Py_DECREF(lost);
    if (sum == NULL)
        return NULL;
    if (PyObject_SetAttr(it->typer, S_LOST_EVENTS, sum) < 0) {
        Py_DECREF(sum);
        return NULL;
    }
    PyObject *items[2] = {LOST_METRIC, sum};
    PyObject *d = tup(T_Metric, 2, items);
    Py_DECREF(sum);
    return event(K_METRIC, ev, c, NO_STACK, d);
}

static PyObject *
h_label(TypeIter *it, PyObject *ev, PyObject *c)
{
    PyObject *kind = ARG(3), *rid = ARG(4), *label = ARG(5);
    int k = small_enum(kind, 4);
    if (k < 0)
        return NULL;
    if (k == RK_COROUTINE || k == RK_LOOP) {
        PyObject *key = PyTuple_Pack(2, kind, rid);
        if (key == NULL)
            return NULL;
        PyObject *old = PyDict_GetItemWithError(it->labels, key);
        int eq = 0;
        if (old != NULL) {
            Py_INCREF(old);
            eq = PyObject_RichCompareBool(old, label, Py_EQ);
            Py_DECREF(old);
        }
        else if (PyErr_Occurred()) {
            eq = -1;
        }
        if (eq == 0)
            eq = PyDict_SetItem(it->labels, key, label) < 0 ? -1 : 0;
        Py_DECREF(key);
        if (eq < 0)
            return NULL;
        if (eq)
            Py_RETURN_NONE;
    }
    PyObject *r = resource(k, rid);
    if (r == NULL)
        return NULL;
    PyObject *items[2] = {label, r};
    PyObject *d = tup(T_Label, 2, items);
    Py_DECREF(r);
    return event(K_LABEL, ev, c, NO_STACK, d);
}

static PyObject *
h_sample(TypeIter *it, PyObject *ev, PyObject *c)
{
    PyObject *stack = stack_of(it, ARG(6));
    if (stack == NULL)
        return NULL;
    PyObject *items[7] = {K_STACK_SAMPLE, ARG(0), ARG(5), ARG(4),
                          ARG(3),         stack,  Py_None};
    return tup(T_Event, 7, items);
}

static PyObject *
range_details(PyObject *ev)
{
    int k = small_enum(ARG(4), 4);
    if (k < 0)
        return NULL;
    PyObject *r = resource(k, ARG(5));
    if (r == NULL)
        return NULL;
    PyObject *items[2] = {ARG(3), r};
    PyObject *d = tup(T_Range, 2, items);
    Py_DECREF(r);
    return d;
}

static PyObject *
h_range_active(TypeIter *it, PyObject *ev, PyObject *c)
{
    PyObject *key = PyTuple_Pack(3, ARG(3), ARG(4), ARG(5));
    if (key == NULL)
        return NULL;
    int in = PySet_Contains(it->open, key);
    if (in == 0)
        in = PySet_Add(it->open, key) < 0 ? -1 : 0;
    Py_DECREF(key);
    if (in < 0)
        return NULL;
    if (in)
        Py_RETURN_NONE;
    return event(K_RANGE_ACTIVE, ev, c, NO_STACK, range_details(ev));
}

static PyObject *
h_range(TypeIter *it, PyObject *ev, PyObject *c, int begin)
{
    PyObject *key = PyTuple_Pack(3, ARG(3), ARG(4), ARG(5));
    if (key == NULL)
        return NULL;
    int r = begin ? PySet_Add(it->open, key) : PySet_Discard(it->open, key);
    Py_DECREF(key);
    if (r < 0)
        return NULL;
    PyObject *stack = stack_of(it, ARG(6));
    if (stack == NULL)
        return NULL;
    return event(begin ? K_RANGE_BEGIN : K_RANGE_END, ev, c, stack,
                 range_details(ev));
}

static PyObject *
h_task_begin(TypeIter *it, PyObject *ev, PyObject *c)
{
    PyObject *task = ARG(3), *parent = ARG(4), *type = ARG(5);
    PyObject *value = PyTuple_Pack(2, parent, type);
    if (value == NULL)
        return NULL;
    int r = PyDict_SetItem(it->tasks, task, value);
    Py_DECREF(value);
    if (r < 0)
        return NULL;
    if (PyDict_GET_SIZE(it->tasks) > MAX_OPEN_TASKS) {
        /* the oldest half go */
        Py_ssize_t n = MAX_OPEN_TASKS / 2, i = 0, pos = 0;
        PyObject *old = PyList_New(n), *key, *v;
        if (old == NULL)
            return NULL;
        while (i < n && PyDict_Next(it->tasks, &pos, &key, &v)) {
            Py_INCREF(key);
            PyList_SET_ITEM(old, i++, key);
        }
        for (Py_ssize_t j = 0; j < i; j++) {
            if (PyDict_DelItem(it->tasks, PyList_GET_ITEM(old, j)) < 0) {
                Py_DECREF(old);
                return NULL;
            }
        }
        Py_DECREF(old);
    }
    PyObject *stack = stack_of(it, ARG(6));
    if (stack == NULL)
        return NULL;
    PyObject *items[3] = {task, parent, type};
    return event(K_TASK_BEGIN, ev, c, stack, tup(T_Task, 3, items));
}

static PyObject *
h_task_end(TypeIter *it, PyObject *ev, PyObject *c)
{
    PyObject *task = ARG(3);
    PyObject *parent = NO_TASK, *type = S_EMPTY;
    PyObject *value = PyDict_GetItemWithError(it->tasks, task);
    if (value != NULL) {
        Py_INCREF(value);
        if (!PyTuple_Check(value) || PyTuple_GET_SIZE(value) != 2) {
            Py_DECREF(value);
            PyErr_SetString(PyExc_TypeError, "a task's entry is broken");
            return NULL;
        }
        if (PyDict_DelItem(it->tasks, task) < 0) {
            Py_DECREF(value);
            return NULL;
        }
        parent = PyTuple_GET_ITEM(value, 0);
        type = PyTuple_GET_ITEM(value, 1);
    }
    else if (PyErr_Occurred()) {
        return NULL;
    }
    PyObject *out = NULL;
    PyObject *stack = stack_of(it, ARG(4));
    if (stack != NULL) {
        PyObject *items[3] = {task, parent, type};
        out = event(K_TASK_END, ev, c, stack, tup(T_Task, 3, items));
    }
    Py_XDECREF(value);
    return out;
}

static PyObject *
h_region(TypeIter *it, PyObject *ev, PyObject *c, PyObject *kind)
{
    PyObject *stack = stack_of(it, ARG(5));
    if (stack == NULL)
        return NULL;
    PyObject *items[2] = {ARG(3), ARG(4)};
    return event(kind, ev, c, stack, tup(T_Region, 2, items));
}

static PyObject *
h_log(TypeIter *it, PyObject *ev, PyObject *c)
{
    PyObject *stack = stack_of(it, ARG(6));
    if (stack == NULL)
        return NULL;
    PyObject *items[3] = {ARG(3), ARG(4), ARG(5)};
    return event(K_LOG, ev, c, stack, tup(T_Log, 3, items));
}

static PyObject *
h_create(TypeIter *it, PyObject *ev, PyObject *c)
{
    PyObject *coro = ARG(3);
    if (set_coro(it, coro, CS_RUNNABLE) < 0)
        return NULL;
    PyObject *stack = stack_of(it, ARG(4));
    if (stack == NULL)
        return NULL;
    return event(K_ST, ev, c, stack,
                 transition(RK_COROUTINE, coro, S_EMPTY, NO_STACK,
                            CORO_STATE(CS_NOT_EXIST), CORO_STATE(CS_RUNNABLE)));
}

static PyObject *
h_start(TypeIter *it, PyObject *ev, PyObject *c)
{
    PyObject *coro = ARG(3);
    if (set_coro(it, coro, CS_RUNNING) < 0)
        return NULL;
    PyObject *out = event(K_ST, ev, c, NO_STACK,
                          transition(RK_COROUTINE, coro, S_EMPTY, NO_STACK,
                                     CORO_STATE(CS_RUNNABLE), CORO_STATE(CS_RUNNING)));
    if (out != NULL && enter(c, coro) < 0)
        Py_CLEAR(out);
    return out;
}

/* After a coroutine stops running: if c[1] == coro, leave. */
static PyObject *
left(PyObject *out, PyObject *c, PyObject *coro)
{
    if (out == NULL)
        return NULL;
    int r = same(PyList_GET_ITEM(c, 1), coro);
    if (r > 0)
        r = leave(c);
    if (r < 0)
        Py_CLEAR(out);
    return out;
}

static PyObject *
h_block(TypeIter *it, PyObject *ev, PyObject *c)
{
    PyObject *coro = ARG(3);
    if (set_coro(it, coro, CS_WAITING) < 0)
        return NULL;
    PyObject *stack = stack_of(it, ARG(5));
    if (stack == NULL)
        return NULL;
    PyObject *out =
        event(K_ST, ev, c, stack,
              transition(RK_COROUTINE, coro, ARG(4), stack, CORO_STATE(CS_RUNNING),
                         CORO_STATE(CS_WAITING)));
    return left(out, c, coro);
}

static PyObject *
h_yield(TypeIter *it, PyObject *ev, PyObject *c)
{
    PyObject *coro = ARG(3);
    if (set_coro(it, coro, CS_RUNNABLE) < 0)
        return NULL;
    PyObject *stack = stack_of(it, ARG(4));
    if (stack == NULL)
        return NULL;
    PyObject *out =
        event(K_ST, ev, c, stack,
              transition(RK_COROUTINE, coro, S_YIELD, stack, CORO_STATE(CS_RUNNING),
                         CORO_STATE(CS_RUNNABLE)));
    return left(out, c, coro);
}

static PyObject *
h_end(TypeIter *it, PyObject *ev, PyObject *c)
{
    PyObject *coro = ARG(3);
    if (discard(it->coros, coro) < 0)
        return NULL;
    PyObject *key = PyTuple_Pack(2, RES_KIND(RK_COROUTINE), coro);
    if (key == NULL)
        return NULL;
    int r = discard(it->labels, key);
    Py_DECREF(key);
    if (r < 0)
        return NULL;
    PyObject *out =
        event(K_ST, ev, c, NO_STACK,
              transition(RK_COROUTINE, coro, ARG(4), NO_STACK, CORO_STATE(CS_RUNNING),
                         CORO_STATE(CS_NOT_EXIST)));
    return left(out, c, coro);
}

static PyObject *
h_unblock(TypeIter *it, PyObject *ev, PyObject *c)
{
    PyObject *coro = ARG(3);
    if (set_coro(it, coro, CS_RUNNABLE) < 0)
        return NULL;
    return event(K_ST, ev, c, NO_STACK,
                 transition(RK_COROUTINE, coro, ARG(4), NO_STACK,
                            CORO_STATE(CS_WAITING), CORO_STATE(CS_RUNNABLE)));
}

static PyObject *
h_status(TypeIter *it, PyObject *ev, PyObject *c)
{
    PyObject *coro = ARG(3);
    int s = small_enum(ARG(4), 5);
    if (s < 0)
        return NULL;
    PyObject *new = CORO_STATE(s);
    PyObject *known = PyDict_GetItemWithError(it->coros, coro);
    if (known == NULL && PyErr_Occurred())
        return NULL;
    if (known == new)
        Py_RETURN_NONE; /* restated: nothing new */
    if (s == CS_NOT_EXIST) {
        if (discard(it->coros, coro) < 0)
            return NULL;
    }
    else if (PyDict_SetItem(it->coros, coro, new) < 0) {
        return NULL;
    }
    PyObject *out = event(K_ST, ev, c, NO_STACK,
                          transition(RK_COROUTINE, coro, S_EMPTY, NO_STACK,
                                     CORO_STATE(CS_UNDETERMINED), new));
    if (out != NULL && s == CS_RUNNING) { /* a generation restates it */
        int r = same(PyList_GET_ITEM(c, 1), coro);
        if (r == 0)
            r = enter(c, coro);
        else if (r > 0)
            r = 0;
        if (r < 0)
            Py_CLEAR(out);
    }
    return out;
}

static PyObject *
h_waiting(TypeIter *it, PyObject *ev, PyObject *c)
{
    PyObject *coro = ARG(3);
    PyObject *known = PyDict_GetItemWithError(it->coros, coro);
    if (known == NULL && PyErr_Occurred())
        return NULL;
    if (known == CORO_STATE(CS_WAITING))
        Py_RETURN_NONE; /* restated: nothing new */
    if (set_coro(it, coro, CS_WAITING) < 0)
        return NULL;
    PyObject *stack = stack_of(it, ARG(5));
    if (stack == NULL)
        return NULL;
    return event(K_ST, ev, c, stack,
                 transition(RK_COROUTINE, coro, ARG(4), stack,
                            CORO_STATE(CS_UNDETERMINED), CORO_STATE(CS_WAITING)));
}

/* c[0] = loop, or NO_LOOP if the loop is gone */
static int
set_loop(PyObject *c, PyObject *loop, int gone)
{
    PyObject *v = gone ? NO_LOOP : loop;
    Py_INCREF(v);
    return PyList_SetItem(c, 0, v);
}

static PyObject *
h_loop_status(TypeIter *it, PyObject *ev, PyObject *c)
{
    PyObject *loop = ARG(3);
    int s = small_enum(ARG(4), 4);
    if (s < 0)
        return NULL;
    PyObject *new = LOOP_STATE(s);
    PyObject *known = PyDict_GetItemWithError(it->loops, loop);
    if (known == NULL && PyErr_Occurred())
        return NULL;
    if (known == new) { /* restated: nothing new, but it sets the context */
        if (set_loop(c, loop, 0) < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    if (PyDict_SetItem(it->loops, loop, new) < 0)
        return NULL;
    PyObject *out = event(K_ST, ev, c, NO_STACK,
                          transition(RK_LOOP, loop, S_EMPTY, NO_STACK,
                                     LOOP_STATE(LS_UNDETERMINED), new));
    if (out != NULL && set_loop(c, loop, s == LS_NOT_EXIST) < 0)
        Py_CLEAR(out);
    return out;
}

static PyObject *
h_loop_change(TypeIter *it, PyObject *ev, PyObject *c, int s)
{
    PyObject *loop = ARG(3);
    PyObject *new = LOOP_STATE(s), *old;
    if (s == LS_RUNNING)
        old = LOOP_STATE(LS_IDLE);
    else if (s == LS_IDLE)
        old = LOOP_STATE(LS_RUNNING);
    else {
        old = PyDict_GetItemWithError(it->loops, loop);
        if (old == NULL) {
            if (PyErr_Occurred())
                return NULL;
            old = LOOP_STATE(LS_UNDETERMINED);
        }
    }
    Py_INCREF(old);
    int r = s == LS_NOT_EXIST ? discard(it->loops, loop)
                              : PyDict_SetItem(it->loops, loop, new);
    PyObject *out = NULL;
    if (r == 0)
        out = event(K_ST, ev, c, NO_STACK,
                    transition(RK_LOOP, loop, S_EMPTY, NO_STACK, old, new));
    Py_DECREF(old);
    if (out != NULL && set_loop(c, loop, s == LS_NOT_EXIST) < 0)
        Py_CLEAR(out);
    return out;
}

/* The number of items a record of each handler holds, with its head. */
static const int record_size[] = {
    [H_LOST] = 4,        [H_METRIC] = 5,      [H_LABEL] = 6,      [H_SAMPLE] = 7,
    [H_RANGE_BEGIN] = 7, [H_RANGE_ACTIVE] = 6, [H_RANGE_END] = 7, [H_TASK_BEGIN] = 7,
    [H_TASK_END] = 5,    [H_REGION_BEGIN] = 6, [H_REGION_END] = 6, [H_LOG] = 7,
    [H_CREATE] = 5,      [H_START] = 4,       [H_BLOCK] = 6,      [H_YIELD] = 5,
    [H_UNBLOCK] = 5,     [H_END] = 5,         [H_STATUS] = 5,     [H_WAITING] = 6,
    [H_LOOP_STATUS] = 5, [H_LOOP_RUN] = 4,    [H_LOOP_IDLE] = 4,  [H_LOOP_DESTROY] = 4,
};

static PyObject *
dispatch(TypeIter *it, PyObject *ev, PyObject *c)
{
    if (!PyTuple_Check(ev) || PyTuple_GET_SIZE(ev) < 3) {
        PyErr_SetString(PyExc_TypeError, "a record must be a tuple");
        return NULL;
    }
    long code = PyLong_AsLong(ARG(2));
    if (code == -1 && PyErr_Occurred())
        return NULL;
    int h = code >= 0 && code < 2 * NCODES ? handlers[code] : H_NONE;
    /* Step records hold more than their handler reads (CoroStart). */
    if (h == H_NONE || PyTuple_GET_SIZE(ev) < record_size[h] ||
        (h != H_START && PyTuple_GET_SIZE(ev) != record_size[h])) {
        PyErr_Format(PyExc_ValueError, "a record of code %ld is malformed", code);
        return NULL;
    }
    switch (h) {
    case H_LOST:
        return h_lost(it, ev, c);
    case H_METRIC:
        return h_metric(it, ev, c);
    case H_LABEL:
        return h_label(it, ev, c);
    case H_SAMPLE:
        return h_sample(it, ev, c);
    case H_RANGE_BEGIN:
        return h_range(it, ev, c, 1);
    case H_RANGE_ACTIVE:
        return h_range_active(it, ev, c);
    case H_RANGE_END:
        return h_range(it, ev, c, 0);
    case H_TASK_BEGIN:
        return h_task_begin(it, ev, c);
    case H_TASK_END:
        return h_task_end(it, ev, c);
    case H_REGION_BEGIN:
        return h_region(it, ev, c, K_REGION_BEGIN);
    case H_REGION_END:
        return h_region(it, ev, c, K_REGION_END);
    case H_LOG:
        return h_log(it, ev, c);
    case H_CREATE:
        return h_create(it, ev, c);
    case H_START:
        return h_start(it, ev, c);
    case H_BLOCK:
        return h_block(it, ev, c);
    case H_YIELD:
        return h_yield(it, ev, c);
    case H_UNBLOCK:
        return h_unblock(it, ev, c);
    case H_END:
        return h_end(it, ev, c);
    case H_STATUS:
        return h_status(it, ev, c);
    case H_WAITING:
        return h_waiting(it, ev, c);
    case H_LOOP_STATUS:
        return h_loop_status(it, ev, c);
    case H_LOOP_RUN:
        return h_loop_change(it, ev, c, LS_RUNNING);
    case H_LOOP_IDLE:
        return h_loop_change(it, ev, c, LS_IDLE);
    default: /* H_LOOP_DESTROY */
        return h_loop_change(it, ev, c, LS_NOT_EXIST);
    }
}

#undef ARG

static PyObject *
typeiter_next(TypeIter *it)
{
    if (it->first != NULL) {
        PyObject *first = it->first;
        it->first = NULL;
        return first;
    }
    while (it->records != NULL && it->pos < PyList_GET_SIZE(it->records)) {
        PyObject *ev = PyList_GET_ITEM(it->records, it->pos);
        it->pos++;
        Py_INCREF(ev);
        if (!PyTuple_Check(ev) || PyTuple_GET_SIZE(ev) < 3) {
            Py_DECREF(ev);
            PyErr_SetString(PyExc_TypeError, "a record must be a tuple");
            return NULL;
        }
        PyObject *thread = PyTuple_GET_ITEM(ev, 1);
        PyObject *c = PyDict_GetItemWithError(it->ctx, thread);
        if (c != NULL) {
            Py_INCREF(c);
        }
        else {
            if (PyErr_Occurred()) {
                Py_DECREF(ev);
                return NULL;
            }
            PyObject *outer = PyList_New(0);
            c = outer ? PyList_New(3) : NULL;
            if (c == NULL) {
                Py_XDECREF(outer);
                Py_DECREF(ev);
                return NULL;
            }
            Py_INCREF(NO_LOOP);
            PyList_SET_ITEM(c, 0, NO_LOOP);
            Py_INCREF(NO_COROUTINE);
            PyList_SET_ITEM(c, 1, NO_COROUTINE);
            PyList_SET_ITEM(c, 2, outer);
            if (PyDict_SetItem(it->ctx, thread, c) < 0) {
                Py_DECREF(c);
                Py_DECREF(ev);
                return NULL;
            }
        }
        PyObject *out;
        if (!PyList_CheckExact(c) || PyList_GET_SIZE(c) != 3) {
            PyErr_SetString(PyExc_TypeError, "a thread's context is broken");
            out = NULL;
        }
        else {
            out = dispatch(it, ev, c);
        }
        Py_DECREF(c);
        Py_DECREF(ev);
        if (out != Py_None)
            return out; /* an Event, or NULL with an error */
        Py_DECREF(out);
    }
    Py_CLEAR(it->records);
    if (it->done != NULL) {
        PyObject *done = it->done;
        it->done = NULL;
        PyObject *r = PyObject_CallNoArgs(done);
        Py_DECREF(done);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
    }
    return NULL;
}

static int
typeiter_traverse(TypeIter *it, visitproc visit, void *arg)
{
    Py_VISIT(it->records);
    Py_VISIT(it->ctx);
    Py_VISIT(it->loops);
    Py_VISIT(it->coros);
    Py_VISIT(it->labels);
    Py_VISIT(it->open);
    Py_VISIT(it->tasks);
    Py_VISIT(it->stacks);
    Py_VISIT(it->typer);
    Py_VISIT(it->first);
    Py_VISIT(it->done);
    return 0;
}

static int
typeiter_clear(TypeIter *it)
{
    Py_CLEAR(it->records);
    Py_CLEAR(it->ctx);
    Py_CLEAR(it->loops);
    Py_CLEAR(it->coros);
    Py_CLEAR(it->labels);
    Py_CLEAR(it->open);
    Py_CLEAR(it->tasks);
    Py_CLEAR(it->stacks);
    Py_CLEAR(it->typer);
    Py_CLEAR(it->first);
    Py_CLEAR(it->done);
    return 0;
}

static void
typeiter_dealloc(TypeIter *it)
{
    PyObject_GC_UnTrack(it);
    typeiter_clear(it);
    Py_TYPE(it)->tp_free((PyObject *)it);
}

static PyObject *
typeiter_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    PyObject *records, *ctx, *loops, *coros, *labels, *open, *tasks, *stacks,
        *typer, *first = NULL, *done = NULL;
    static char *names[] = {"records", "ctx",    "loops", "coros", "labels",
                            "open",    "tasks",  "stacks", "typer", "first",
                            "done",    NULL};
    if (!ready) {
        PyErr_SetString(PyExc_RuntimeError, "_cdecode.setup() was not called");
        return NULL;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!O!O!O!O!O!O!O!O|OO:TypeIter", names,
                                     &PyList_Type, &records, &PyDict_Type, &ctx,
                                     &PyDict_Type, &loops, &PyDict_Type, &coros,
                                     &PyDict_Type, &labels, &PySet_Type, &open,
                                     &PyDict_Type, &tasks, &PyList_Type, &stacks,
                                     &typer, &first, &done))
        return NULL;
    TypeIter *it = (TypeIter *)type->tp_alloc(type, 0);
    if (it == NULL)
        return NULL;
    it->pos = 0;
    Py_INCREF(records);
    it->records = records;
    Py_INCREF(ctx);
    it->ctx = ctx;
    Py_INCREF(loops);
    it->loops = loops;
    Py_INCREF(coros);
    it->coros = coros;
    Py_INCREF(labels);
    it->labels = labels;
    Py_INCREF(open);
    it->open = open;
    Py_INCREF(tasks);
    it->tasks = tasks;
    Py_INCREF(stacks);
    it->stacks = stacks;
    Py_INCREF(typer);
    it->typer = typer;
    if (first == Py_None)
        first = NULL;
    if (done == Py_None)
        done = NULL;
    Py_XINCREF(first);
    it->first = first;
    Py_XINCREF(done);
    it->done = done;
    return (PyObject *)it;
}

static PyTypeObject TypeIter_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "aiotrace.reader._cdecode.TypeIter",
    .tp_basicsize = sizeof(TypeIter),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = PyDoc_STR("TypeIter(records, ctx, loops, coros, labels, open, tasks, "
                        "stacks, typer, first=None, done=None): the Typer's loop "
                        "over a sorted generation: yields first, then the "
                        "records' Events, then calls done()."),
    .tp_new = typeiter_new,
    .tp_dealloc = (destructor)typeiter_dealloc,
    .tp_traverse = (traverseproc)typeiter_traverse,
    .tp_clear = (inquiry)typeiter_clear,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)typeiter_next,
};

static PyMethodDef methods[] = {
    {"setup", (PyCFunction)(void (*)(void))cd_setup, METH_VARARGS | METH_KEYWORDS,
     PyDoc_STR("setup(**constants): the classes, enum members and tables.")},
    {"batch", (PyCFunction)(void (*)(void))cd_batch, METH_FASTCALL,
     PyDoc_STR("batch(payload, strings, nstacks, out) -> bool: checks a BATCH "
               "payload's events and appends their records to out; False at "
               "the first bad event.")},
    {"sort_by_time", (PyCFunction)cd_sort_by_time, METH_O,
     PyDoc_STR("sort_by_time(records) -> bool: sorts records by time, stably; "
               "False (nothing changed) if a time does not fit in 64 bits.")},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "aiotrace.reader._cdecode",
    PyDoc_STR("The reader's per-event loops in C (see _decode.py, _typed.py)."),
    -1,
    methods,
};

PyMODINIT_FUNC
PyInit__cdecode(void)
{
    if (PyType_Ready(&TypeIter_Type) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&TypeIter_Type);
    if (PyModule_AddObject(m, "TypeIter", (PyObject *)&TypeIter_Type) < 0) {
        Py_DECREF(&TypeIter_Type);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
