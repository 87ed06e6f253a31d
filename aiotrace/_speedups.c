/* aiotrace._speedups: the asyncio step hook's fast path, in C.
 *
 * StepHook replaces asyncio.events.Handle._run. It handles the commonest
 * case only: a step of a plain asyncio Task (the C Task type) that the
 * tracer already knows, on a thread whose state exists. It records what
 * the pure-Python hook records, with the same objects. Everything else
 * (callbacks, unknown tasks, first use on a thread, blocks, ends, stalls,
 * errors) is delegated to Python functions given at construction, so the
 * Python module stays the reference implementation: setting
 * AIOTRACE_PURE_PYTHON=1 (or a failed build) uses it alone.
 *
 * Invariant: the handle's own outcome (a return value, or SystemExit /
 * KeyboardInterrupt escaping asyncio's Handle._run) is passed through
 * untouched; a failure in the bookkeeping after the step is reported to
 * the `fail` callback and never replaces it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <time.h>

#if PY_VERSION_HEX < 0x030C0000
/* Python 3.11 has only the three-part error state. */
static PyObject *
PyErr_GetRaisedException(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL) {
        return NULL;
    }
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(value, tb);
    }
    Py_DECREF(type);
    Py_XDECREF(tb);
    return value;
}

static void
PyErr_SetRaisedException(PyObject *exc)
{
    if (exc == NULL) {
        return;
    }
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc,
                  PyException_GetTraceback(exc));
}
#endif

typedef struct {
    PyObject_HEAD
    PyObject *orig_run;   /* asyncio's Handle._run */
    PyObject *slow_run;   /* the pure-Python hook: handles every other case */
    PyObject *after;      /* after(task, cid, t0, t1) -> record, not a yield */
    PyObject *stall_end;  /* stall_end(ts, t0, t1) */
    PyObject *fail;       /* fail(exc) */
    PyObject *local;      /* the recorder's threading.local (attribute ts) */
    PyObject *ids;        /* dict: id(task) -> coroutine id */
    PyObject *ctask;      /* the C Task type */
    PyObject *run_yield;  /* the CoroRunYield code, an int */
    long long stall_ns;
} StepHook;

static PyObject *s_callback, *s_self, *s_ts, *s_pending, *s_cur, *s_t0,
    *s_events, *s_fut_waiter, *s_done, *zero;

static long long
now_ns(void)
{
    /* time.perf_counter_ns() on Linux is CLOCK_MONOTONIC. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static PyObject *
delegate(StepHook *self, PyObject *handle)
{
    return PyObject_CallOneArg(self->slow_run, handle);
}

/* The bookkeeping after a step; returns 0, or -1 with an exception set. */
static int
after_step(StepHook *self, PyObject *task, PyObject *ts, PyObject *cid,
           long long t0)
{
    int rc = -1;
    PyObject *t0obj = NULL, *t1obj = NULL, *waiter = NULL, *record = NULL,
             *events = NULL, *done = NULL;
    if (PyObject_SetAttr(ts, s_t0, zero) < 0) {
        return -1;
    }
    /* t1 is read after t0 is cleared: see the watchdog's invariant. */
    long long t1 = now_ns();
    if (PyObject_SetAttr(ts, s_cur, zero) < 0) {
        return -1;
    }
    waiter = PyObject_GetAttr(task, s_fut_waiter);
    if (waiter == NULL) {
        goto done;
    }
    t0obj = PyLong_FromLongLong(t0);
    t1obj = PyLong_FromLongLong(t1);
    if (t0obj == NULL || t1obj == NULL) {
        goto done;
    }
    if (waiter == Py_None) {
        done = PyObject_CallMethodNoArgs(task, s_done);
        if (done == NULL) {
            goto done;
        }
        int is_done = PyObject_IsTrue(done);
        if (is_done < 0) {
            goto done;
        }
        if (!is_done) {
            PyObject *dur = PyLong_FromLongLong(t1 - t0);
            if (dur == NULL) {
                goto done;
            }
            record = PyTuple_Pack(4, self->run_yield, t0obj, cid, dur);
            Py_DECREF(dur);
        }
    }
    if (record == NULL) {
        if (PyErr_Occurred()) {
            goto done;
        }
        record = PyObject_CallFunctionObjArgs(self->after, task, cid, t0obj,
                                              t1obj, NULL);
        if (record == NULL) {
            goto done;
        }
    }
    events = PyObject_GetAttr(ts, s_events);
    if (events == NULL || PyList_Append(events, record) < 0) {
        goto done;
    }
    if (t1 - t0 > self->stall_ns) {
        PyObject *r = PyObject_CallFunctionObjArgs(self->stall_end, ts, t0obj,
                                                   t1obj, NULL);
        if (r == NULL) {
            goto done;
        }
        Py_DECREF(r);
    }
    rc = 0;
done:
    Py_XDECREF(t0obj);
    Py_XDECREF(t1obj);
    Py_XDECREF(waiter);
    Py_XDECREF(record);
    Py_XDECREF(events);
    Py_XDECREF(done);
    return rc;
}

static PyObject *
StepHook_call(StepHook *self, PyObject *args, PyObject *kwargs)
{
    PyObject *handle, *cb = NULL, *task = NULL, *ts = NULL, *pending = NULL,
                      *key = NULL, *cid = NULL, *t0obj = NULL;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
        PyErr_SetString(PyExc_TypeError, "_run() takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_UnpackTuple(args, "_run", 1, 1, &handle)) {
        return NULL;
    }
    cb = PyObject_GetAttr(handle, s_callback);
    if (cb == NULL) {
        PyErr_Clear();
        return delegate(self, handle);
    }
    task = PyObject_GetAttr(cb, s_self);
    Py_DECREF(cb);
    if (task == NULL) {
        PyErr_Clear();
        return delegate(self, handle);
    }
    if ((PyObject *)Py_TYPE(task) != self->ctask) {
        Py_DECREF(task);
        return delegate(self, handle);
    }
    ts = PyObject_GetAttr(self->local, s_ts);
    if (ts == NULL) {
        PyErr_Clear();
        Py_DECREF(task);
        return delegate(self, handle);
    }
    pending = PyObject_GetAttr(ts, s_pending);
    key = PyLong_FromVoidPtr(task);
    if (pending == NULL || pending != Py_None || key == NULL) {
        PyErr_Clear();
        goto slow;
    }
    cid = PyDict_GetItemWithError(self->ids, key); /* borrowed */
    if (cid == NULL) {
        PyErr_Clear();
        goto slow;
    }
    Py_INCREF(cid);
    long long t0 = now_ns();
    t0obj = PyLong_FromLongLong(t0);
    if (t0obj == NULL || PyObject_SetAttr(ts, s_cur, cid) < 0 ||
        PyObject_SetAttr(ts, s_t0, t0obj) < 0) {
        PyErr_Clear();
        goto slow;
    }
    PyObject *result = PyObject_CallOneArg(self->orig_run, handle);
    PyObject *exc = PyErr_GetRaisedException();
    if (after_step(self, task, ts, cid, t0) < 0) {
        PyObject *err = PyErr_GetRaisedException();
        PyObject *r = PyObject_CallOneArg(self->fail, err);
        Py_XDECREF(r);
        Py_DECREF(err);
        PyErr_Clear();
    }
    PyErr_SetRaisedException(exc);
    Py_DECREF(task);
    Py_DECREF(ts);
    Py_DECREF(pending);
    Py_DECREF(key);
    Py_DECREF(cid);
    Py_DECREF(t0obj);
    return result;
slow:
    Py_XDECREF(task);
    Py_XDECREF(ts);
    Py_XDECREF(pending);
    Py_XDECREF(key);
    Py_XDECREF(cid);
    Py_XDECREF(t0obj);
    return delegate(self, handle);
}

static int
StepHook_traverse(StepHook *self, visitproc visit, void *arg)
{
    Py_VISIT(self->orig_run);
    Py_VISIT(self->slow_run);
    Py_VISIT(self->after);
    Py_VISIT(self->stall_end);
    Py_VISIT(self->fail);
    Py_VISIT(self->local);
    Py_VISIT(self->ids);
    Py_VISIT(self->ctask);
    Py_VISIT(self->run_yield);
    return 0;
}

static int
StepHook_clear(StepHook *self)
{
    Py_CLEAR(self->orig_run);
    Py_CLEAR(self->slow_run);
    Py_CLEAR(self->after);
    Py_CLEAR(self->stall_end);
    Py_CLEAR(self->fail);
    Py_CLEAR(self->local);
    Py_CLEAR(self->ids);
    Py_CLEAR(self->ctask);
    Py_CLEAR(self->run_yield);
    return 0;
}

static void
StepHook_dealloc(StepHook *self)
{
    PyObject_GC_UnTrack(self);
    StepHook_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
StepHook_init(StepHook *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"orig_run", "slow_run", "after", "stall_end",
                            "fail", "local", "ids", "ctask", "run_yield",
                            "stall_ns", NULL};
    PyObject *o[9];
    long long stall_ns;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "$OOOOOOO!OOL", names,
                                     &o[0], &o[1], &o[2], &o[3], &o[4], &o[5],
                                     &PyDict_Type, &o[6], &o[7], &o[8],
                                     &stall_ns)) {
        return -1;
    }
    StepHook_clear(self);
    PyObject **slots[] = {&self->orig_run, &self->slow_run, &self->after,
                          &self->stall_end, &self->fail, &self->local,
                          &self->ids, &self->ctask, &self->run_yield};
    for (int i = 0; i < 9; i++) {
        *slots[i] = Py_NewRef(o[i]);
    }
    self->stall_ns = stall_ns;
    return 0;
}

static PyTypeObject StepHookType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "aiotrace._speedups.StepHook",
    .tp_doc = PyDoc_STR("StepHook records asyncio task steps; it replaces "
                        "Handle._run while tracing."),
    .tp_basicsize = sizeof(StepHook),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
                Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)StepHook_init,
    .tp_dealloc = (destructor)StepHook_dealloc,
    .tp_traverse = (traverseproc)StepHook_traverse,
    .tp_clear = (inquiry)StepHook_clear,
    .tp_call = (ternaryfunc)StepHook_call,
    .tp_descr_get = NULL,
};

static PyObject *
StepHook_get(PyObject *self, PyObject *obj, PyObject *type)
{
    if (obj == NULL || obj == Py_None) {
        return Py_NewRef(self);
    }
    return PyMethod_New(self, obj);
}

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "aiotrace._speedups",
    .m_doc = "The asyncio step hook's fast path.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
#define INTERN(var, text)                                      \
    if ((var = PyUnicode_InternFromString(text)) == NULL) {    \
        return NULL;                                           \
    }
    INTERN(s_callback, "_callback");
    INTERN(s_self, "__self__");
    INTERN(s_ts, "ts");
    INTERN(s_pending, "pending");
    INTERN(s_cur, "cur");
    INTERN(s_t0, "t0");
    INTERN(s_events, "events");
    INTERN(s_fut_waiter, "_fut_waiter");
    INTERN(s_done, "done");
#undef INTERN
    zero = PyLong_FromLong(0);
    if (zero == NULL) {
        return NULL;
    }
    StepHookType.tp_descr_get = StepHook_get;
    if (PyType_Ready(&StepHookType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "StepHook", (PyObject *)&StepHookType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
