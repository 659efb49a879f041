/* pycontain.actuate._spawn: start an agent inside its cgroups with vfork.
 *
 * Why hand-written: the agent's first instruction must already run inside its
 * cgroups (v1 joins first, cgroup2 last), with the capability bounding set cut,
 * its uid/gid changed, no_new_privs set and a seccomp filter loaded, all in the
 * child between fork and exec. subprocess (_posixsubprocess) can only do this
 * through preexec_fn, which forces a full fork of the (multi-threaded) Python
 * process and runs Python code in the child: measured 3.7 ms of CPU per start
 * (page faults of the copied interpreter, the hook itself). os.posix_spawn has
 * no cgroup join, no bounding set and no seccomp; libseccomp loads a filter
 * only from a process that builds it; no library joins v1 and v2 cgroups and
 * drops privileges in a vfork child. So this module does exactly those steps
 * with plain system calls in a vfork child (no copy of the parent's memory),
 * and reports the first failing step and its errno through a close-on-exec
 * pipe, as _posixsubprocess does.
 *
 * Rules for the child (it shares the parent's memory until exec):
 *  - only async-signal-safe calls, no malloc, nothing written the parent reads
 *    except through the pipe; everything (argv, env, paths, the BPF filter) is
 *    prepared by the parent;
 *  - credentials change with raw setgroups/setresgid/setresuid system calls:
 *    glibc's wrappers broadcast the change to every thread of the process
 *    (SIGSETXID), i.e. to the *parent's* threads from a vfork child;
 *  - all signals are blocked in the parent thread around vfork, and the child
 *    resets every caught signal to its default before it unblocks them, so a
 *    handler of the parent never runs on the shared memory.
 * The caller (pycontain/actuate/spawn.py) falls back to the Python fork path
 * when this module was not built.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

/* the child's steps, in order; names reported to Python */
enum step { ST_STDIO, ST_CWD, ST_SETSID, ST_CGROUP, ST_CAPBSET, ST_SETGROUPS, ST_SETGID,
            ST_SETUID, ST_HOME, ST_NO_NEW_PRIVS, ST_SECCOMP, ST_CLOSE_FDS, ST_EXEC };
static const char *const STEP_NAMES[] = {
    "stdio", "cwd", "setsid", "cgroup", "capbset", "setgroups", "setgid",
    "setuid", "home", "no_new_privs", "seccomp", "close_fds", "exec" };

struct report { int32_t step, err, index; };

struct plan {
    const char *exe;
    char **argv, **envp;
    const char *cwd;                 /* NULL: stay */
    int fd_in, fd_out, fd_err;       /* -1: inherit */
    const char **procs; Py_ssize_t nprocs;   /* cgroup.procs files, v1 first, v2 last */
    int *caps; Py_ssize_t ncaps;     /* bounding set to drop */
    int set_creds; uid_t uid; gid_t gid; gid_t *groups; Py_ssize_t ngroups;
    const char *home;                /* chdir here if the cwd is closed to the new uid */
    int no_new_privs;
    int have_filter; struct sock_fprog prog;
    int errpipe;                     /* write end, close-on-exec */
    int max_fd;
};

static void __attribute__((noreturn)) fail(const struct plan *p, int step, int index)
{
    struct report r = { step, errno, index };
    ssize_t n = write(p->errpipe, &r, sizeof r);
    (void)n;
    _exit(255);
}

static int fmt_int(char *buf, long v)   /* decimal, no locale, no malloc */
{
    char tmp[24];
    int n = 0, len = 0;
    do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v > 0);
    while (n > 0) buf[len++] = tmp[--n];
    return len;
}

static void reset_signals(void)
{
    for (int sig = 1; sig < _NSIG; sig++) {
        struct sigaction sa;
        if (sig == SIGKILL || sig == SIGSTOP || sigaction(sig, NULL, &sa) != 0)
            continue;                /* glibc's reserved signals answer EINVAL */
        /* caught ones to default; Python's SIG_IGN of SIGPIPE/SIGXFSZ too
         * (subprocess's restore_signals); other ignored ones stay ignored */
        if (sa.sa_handler == SIG_DFL)
            continue;
        if (sa.sa_handler == SIG_IGN && sig != SIGPIPE && sig != SIGXFSZ)
            continue;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_DFL;
        sigaction(sig, &sa, NULL);
    }
}

static int to_fd(int fd, int target)
{
    if (fd == target)                /* already there: only make it survive exec */
        return fcntl(fd, F_SETFD, 0);
    return dup2(fd, target) < 0 ? -1 : 0;
}

static void setup_stdio(const struct plan *p)
{
    int in = p->fd_in, out = p->fd_out, err = p->fd_err;
    if (out == 0 && (out = dup(out)) < 0)
        fail(p, ST_STDIO, 1);
    while (err == 0 || err == 1)
        if ((err = dup(err)) < 0)
            fail(p, ST_STDIO, 2);
    if (in >= 0 && to_fd(in, 0) < 0)
        fail(p, ST_STDIO, 0);
    if (out >= 0 && to_fd(out, 1) < 0)
        fail(p, ST_STDIO, 1);
    if (err >= 0 && to_fd(err, 2) < 0)
        fail(p, ST_STDIO, 2);
}

static void join_cgroups(const struct plan *p)
{
    char pid[24];
    int len = fmt_int(pid, (long)syscall(SYS_getpid));
    for (Py_ssize_t i = 0; i < p->nprocs; i++) {
        int fd = open(p->procs[i], O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, pid, (size_t)len) != len)
            fail(p, ST_CGROUP, (int)i);
        close(fd);
    }
}

static void drop_privileges(const struct plan *p)
{
    for (Py_ssize_t i = 0; i < p->ncaps; i++)   /* needs CAP_SETPCAP: before the uid changes */
        if (prctl(PR_CAPBSET_DROP, p->caps[i], 0, 0, 0) != 0 && errno != EINVAL)
            fail(p, ST_CAPBSET, p->caps[i]);     /* EINVAL: a capability this kernel lacks */
    if (p->set_creds) {
        if (syscall(SYS_setgroups, (size_t)p->ngroups, p->groups) != 0)
            fail(p, ST_SETGROUPS, 0);
        if (syscall(SYS_setresgid, p->gid, p->gid, p->gid) != 0)
            fail(p, ST_SETGID, 0);
        if (syscall(SYS_setresuid, p->uid, p->uid, p->uid) != 0)
            fail(p, ST_SETUID, 0);
        if (p->home != NULL && access(".", X_OK) != 0 && chdir(p->home) != 0)
            fail(p, ST_HOME, 0);
    }
    if (p->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        fail(p, ST_NO_NEW_PRIVS, 0);
    if (p->have_filter && prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &p->prog, 0, 0) != 0)
        fail(p, ST_SECCOMP, 0);
}

static void close_fds(const struct plan *p)
{
    /* close-on-exec rather than close: the error pipe must stay open until exec */
    if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) == 0)
        return;
    for (int fd = 3; fd < p->max_fd; fd++)   /* kernels before 5.11 */
        if (fd != p->errpipe)
            close(fd);
}

static void __attribute__((noreturn)) child(const struct plan *p)
{
    sigset_t none;
    reset_signals();
    setup_stdio(p);
    if (p->cwd != NULL && chdir(p->cwd) != 0)
        fail(p, ST_CWD, 0);
    if (setsid() < 0)                /* own session and process group */
        fail(p, ST_SETSID, 0);
    join_cgroups(p);                 /* from here on the agent's rules apply */
    drop_privileges(p);
    close_fds(p);
    sigemptyset(&none);              /* the parent may block signals in its threads */
    sigprocmask(SIG_SETMASK, &none, NULL);
    execve(p->exe, p->argv, p->envp);
    fail(p, ST_EXEC, 0);
}

static pid_t __attribute__((noinline)) start(const struct plan *p)
{
    pid_t pid = vfork();
    if (pid == 0)
        child(p);                    /* never returns */
    return pid;
}

/* ---- the parent: Python objects to C arrays ------------------------------ */

struct owned { PyObject *keep; void *mem[8]; int nmem; };

static void *own_alloc(struct owned *o, size_t n)
{
    void *m = PyMem_Calloc(n ? n : 1, 1);
    if (m == NULL)
        PyErr_NoMemory();
    else
        o->mem[o->nmem++] = m;
    return m;
}

/* a NULL-terminated array of the byte strings in seq (paths: fs-encoded) */
static char **bytes_array(struct owned *o, PyObject *seq, Py_ssize_t *count)
{
    PyObject *fast = PySequence_Fast(seq, "expected a sequence");
    if (fast == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    char **arr = own_alloc(o, sizeof(char *) * (size_t)(n + 1));
    for (Py_ssize_t i = 0; arr != NULL && i < n; i++) {
        PyObject *b = NULL;
        if (!PyUnicode_FSConverter(PySequence_Fast_GET_ITEM(fast, i), &b) ||
            PyList_Append(o->keep, b) != 0) {
            Py_XDECREF(b);
            arr = NULL;
            break;
        }
        arr[i] = PyBytes_AS_STRING(b);
        Py_DECREF(b);
    }
    Py_DECREF(fast);
    if (count != NULL)
        *count = n;
    return arr;
}

static const char *opt_path(struct owned *o, PyObject *obj)
{
    PyObject *b = NULL;
    if (obj == Py_None)
        return "";
    if (!PyUnicode_FSConverter(obj, &b) || PyList_Append(o->keep, b) != 0) {
        Py_XDECREF(b);
        return NULL;
    }
    Py_DECREF(b);
    return PyBytes_AS_STRING(b);
}

static int int_array(struct owned *o, PyObject *seq, int **out, Py_ssize_t *count)
{
    PyObject *fast = PySequence_Fast(seq, "expected a sequence of ints");
    if (fast == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    int *arr = own_alloc(o, sizeof(int) * (size_t)n);
    for (Py_ssize_t i = 0; arr != NULL && i < n; i++) {
        long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(fast, i));
        if (v == -1 && PyErr_Occurred()) { arr = NULL; break; }
        arr[i] = (int)v;
    }
    Py_DECREF(fast);
    *out = arr;
    *count = n;
    return arr == NULL ? -1 : 0;
}

static int fill_creds(struct owned *o, struct plan *p, PyObject *creds)
{
    PyObject *groups;
    unsigned long uid, gid;
    int *g;
    if (creds == Py_None)
        return 0;
    if (!PyArg_ParseTuple(creds, "kkO;creds: (uid, gid, groups)", &uid, &gid, &groups))
        return -1;
    if (int_array(o, groups, &g, &p->ngroups) != 0)
        return -1;
    p->set_creds = 1;
    p->uid = (uid_t)uid;
    p->gid = (gid_t)gid;
    p->groups = (gid_t *)g;          /* gid_t and int are both 32 bits on Linux */
    return 0;
}

static int fill_filter(struct plan *p, PyObject *filter)
{
    char *buf;
    Py_ssize_t len;
    if (filter == Py_None)
        return 0;
    if (PyBytes_AsStringAndSize(filter, &buf, &len) != 0)
        return -1;
    if (len == 0 || len % (Py_ssize_t)sizeof(struct sock_filter) != 0 ||
        len / (Py_ssize_t)sizeof(struct sock_filter) > BPF_MAXINSNS) {
        PyErr_SetString(PyExc_ValueError, "seccomp filter: not a whole number of BPF instructions");
        return -1;
    }
    p->have_filter = 1;
    p->prog.len = (unsigned short)(len / (Py_ssize_t)sizeof(struct sock_filter));
    p->prog.filter = (struct sock_filter *)buf;   /* the bytes object outlives the spawn */
    return 0;
}

static int error_pipe(int fds[2])
{
    if (pipe2(fds, O_CLOEXEC) != 0)
        return -1;
    if (fds[1] < 3) {                /* must not land on 0, 1 or 2 in the child */
        int w = fcntl(fds[1], F_DUPFD_CLOEXEC, 3);
        close(fds[1]);
        if (w < 0) { close(fds[0]); return -1; }
        fds[1] = w;
    }
    return 0;
}

static PyObject *run_plan(struct plan *p)
{
    int fds[2];
    sigset_t all, old;
    struct report r;
    ssize_t got = 0, n;
    pid_t pid;
    int vfork_errno = 0;
    if (error_pipe(fds) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    p->errpipe = fds[1];
    sigfillset(&all);
    Py_BEGIN_ALLOW_THREADS
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pid = start(p);
    vfork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(fds[1]);
    if (pid > 0)
        while (got < (ssize_t)sizeof r &&
               ((n = read(fds[0], (char *)&r + got, sizeof r - (size_t)got)) > 0 || (n < 0 && errno == EINTR)))
            if (n > 0)
                got += n;
    Py_END_ALLOW_THREADS
    close(fds[0]);
    if (pid < 0) {
        errno = vfork_errno;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (got != (ssize_t)sizeof r)    /* EOF: the exec happened */
        return Py_BuildValue("(iOii)", (int)pid, Py_None, 0, -1);
    return Py_BuildValue("(isii)", (int)pid, STEP_NAMES[r.step], (int)r.err, (int)r.index);
}

PyDoc_STRVAR(spawn_doc,
"spawn(exe, argv, env, cwd, stdio, procs, caps, creds, home, no_new_privs, filter, max_fd)\n"
"-> (pid, failed_step, errno, index)\n\n"
"vfork a child that joins the cgroup.procs files in order, drops the bounding-set\n"
"capabilities caps, changes to creds=(uid, gid, groups) (None: keep; home: the\n"
"directory to enter when the cwd is closed to the new uid), sets no_new_privs,\n"
"loads filter (seccomp BPF bytes, or None), closes fds above 2 and execs exe.\n"
"failed_step is None when the exec happened; otherwise the child has exited\n"
"with 255 and must be reaped by the caller.");

static PyObject *spawn(PyObject *self, PyObject *args)
{
    PyObject *exe, *argv, *env, *cwd, *procs, *caps, *creds, *home, *filter, *result = NULL;
    int nnp, max_fd;
    struct plan p;
    struct owned o = { PyList_New(0), {0}, 0 };
    (void)self;
    memset(&p, 0, sizeof p);
    if (o.keep == NULL)
        return NULL;
    if (!PyArg_ParseTuple(args, "OOOO(iii)OOOOpOi:spawn", &exe, &argv, &env, &cwd, &p.fd_in, &p.fd_out,
                          &p.fd_err, &procs, &caps, &creds, &home, &nnp, &filter, &max_fd))
        goto done;
    p.no_new_privs = nnp;
    p.max_fd = max_fd;
    if ((p.exe = opt_path(&o, exe)) == NULL || (p.cwd = opt_path(&o, cwd)) == NULL ||
        (p.home = opt_path(&o, home)) == NULL ||
        (p.argv = bytes_array(&o, argv, NULL)) == NULL || (p.envp = bytes_array(&o, env, NULL)) == NULL ||
        (p.procs = (const char **)bytes_array(&o, procs, &p.nprocs)) == NULL ||
        int_array(&o, caps, &p.caps, &p.ncaps) != 0 || fill_creds(&o, &p, creds) != 0 ||
        fill_filter(&p, filter) != 0)
        goto done;
    if (cwd == Py_None)
        p.cwd = NULL;
    if (home == Py_None)
        p.home = NULL;
    result = run_plan(&p);
done:
    for (int i = 0; i < o.nmem; i++)
        PyMem_Free(o.mem[i]);
    Py_DECREF(o.keep);
    return result;
}

static PyMethodDef methods[] = {
    {"spawn", spawn, METH_VARARGS, spawn_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_spawn",
    "Start an agent in its cgroups with vfork (see _spawn.c for why it is hand-written).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__spawn(void)
{
    return PyModule_Create(&module);
}
