/* A fake NVIDIA driver library (libnvidia-ml.so.1) for tests without a GPU.
 *
 * It exports the real NVML C ABI for the calls pycontain makes, with the real
 * struct layouts, so pynvml (nvidia-ml-py) loads it through its normal
 * CDLL("libnvidia-ml.so.1") lookup and the tests exercise the real pynvml
 * wrappers. What it reports is scripted by a text file named by
 * PYCONTAIN_FAKE_NVML_SCENARIO, re-read whenever its mtime changes:
 *
 *   device <index> name=H100 uuid=GPU-0 mem_total=<bytes> mem_used=<bytes> util=<pct> power_mw=<mW> mig=0|1 gone=0|1
 *          minor=<N of /dev/nvidiaN, default index> gpm=0|1 int_util=<pct> tensor_util=<pct>
 *   process device=<index> comm=<comm>|pid=<pid> mem=<bytes> sm=<pct>|sm=cpu [graphics=1] [mps=1] [exited=1]
 *   error <nvmlFunctionName> NOT_SUPPORTED|NO_PERMISSION|GPU_IS_LOST|UNKNOWN
 *
 * "comm=" processes are matched on every call by scanning /proc/<pid>/comm,
 * so a test's real process "appears" on a GPU as soon as it runs.
 * "sm=cpu": the process's SM utilisation is its CPU use since the previous
 * reading (a busy loop stands in for a kernel launcher; frozen = 0 %), which
 * lets the throttle benchmark measure the duty cycle's effect.
 * "mps=1": an MPS client, listed only by nvmlDeviceGetMPSComputeRunningProcesses.
 * "exited=1": a process that used the GPU and exited before this reading:
 * no longer in the running lists, its utilisation samples still returned.
 * "gpm=1": the device supports GPM; int_util / tensor_util are the
 * NVML_GPM_METRIC_INTEGER_UTIL / ANY_TENSOR_UTIL values it reports.
 */
#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

typedef int nvmlReturn_t;
#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_NO_PERMISSION 4
#define NVML_ERROR_NOT_FOUND 6
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_GPU_IS_LOST 15
#define NVML_ERROR_UNKNOWN 999

typedef struct { unsigned int index; } fake_device;
typedef fake_device *nvmlDevice_t;

typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct { unsigned int version; unsigned long long total, reserved, free, used; } nvmlMemory_v2_t;
typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;
typedef struct { unsigned int pid; unsigned long long usedGpuMemory; unsigned int gpuInstanceId, computeInstanceId; } nvmlProcessInfo_t;
typedef struct { unsigned int pid; unsigned long long timeStamp; unsigned int smUtil, memUtil, encUtil, decUtil; } nvmlProcessUtilizationSample_t;

#define MAX_DEV 8
#define MAX_PROC 64
#define MAX_ERR 16

struct dev { int present; char name[96]; char uuid[96]; unsigned long long mem_total, mem_used; unsigned util, power_mw, mig, gone;
	     unsigned minor, gpm; double int_util, tensor_util; };
struct proc { unsigned device; unsigned pid; char comm[32]; unsigned long long mem; unsigned sm; int sm_cpu; int graphics; int mps; int exited; };
struct err { char fn[96]; nvmlReturn_t code; };

static struct dev devs[MAX_DEV];
static struct proc procs[MAX_PROC];
static struct err errs[MAX_ERR];
static int nprocs, nerrs, inited;
static fake_device handles[MAX_DEV];
static time_t loaded_mtime;
static long loaded_mtime_ns;

static nvmlReturn_t code_of(const char *s)
{
	if (!strcmp(s, "NOT_SUPPORTED")) return NVML_ERROR_NOT_SUPPORTED;
	if (!strcmp(s, "NO_PERMISSION")) return NVML_ERROR_NO_PERMISSION;
	if (!strcmp(s, "GPU_IS_LOST")) return NVML_ERROR_GPU_IS_LOST;
	if (!strcmp(s, "NOT_FOUND")) return NVML_ERROR_NOT_FOUND;
	return NVML_ERROR_UNKNOWN;
}

static void kv(const char *tok, char *k, size_t kn, char *v, size_t vn)
{
	const char *eq = strchr(tok, '=');
	k[0] = v[0] = 0;
	if (!eq) return;
	snprintf(k, kn, "%.*s", (int)(eq - tok), tok);
	snprintf(v, vn, "%s", eq + 1);
}

static void load(void)
{
	const char *path = getenv("PYCONTAIN_FAKE_NVML_SCENARIO");
	struct stat st;
	if (!path || stat(path, &st) != 0)
		return;
	if (st.st_mtim.tv_sec == loaded_mtime && st.st_mtim.tv_nsec == loaded_mtime_ns)
		return;
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	loaded_mtime = st.st_mtim.tv_sec;
	loaded_mtime_ns = st.st_mtim.tv_nsec;
	memset(devs, 0, sizeof(devs));
	memset(procs, 0, sizeof(procs));
	memset(errs, 0, sizeof(errs));
	nprocs = nerrs = 0;
	char line[512];
	while (fgets(line, sizeof(line), f)) {
		char *save = NULL, *tok = strtok_r(line, " \t\r\n", &save);
		if (!tok || tok[0] == '#')
			continue;
		if (!strcmp(tok, "device")) {
			char *idx = strtok_r(NULL, " \t\r\n", &save);
			if (!idx) continue;
			unsigned i = (unsigned)atoi(idx);
			if (i >= MAX_DEV) continue;
			struct dev *d = &devs[i];
			d->present = 1;
			snprintf(d->name, sizeof(d->name), "Fake GPU");
			snprintf(d->uuid, sizeof(d->uuid), "GPU-fake-%u", i);
			d->mem_total = 80ULL << 30;
			d->minor = i;
			while ((tok = strtok_r(NULL, " \t\r\n", &save))) {
				char k[32], v[128];
				kv(tok, k, sizeof(k), v, sizeof(v));
				if (!strcmp(k, "name")) snprintf(d->name, sizeof(d->name), "%s", v);
				else if (!strcmp(k, "uuid")) snprintf(d->uuid, sizeof(d->uuid), "%s", v);
				else if (!strcmp(k, "mem_total")) d->mem_total = strtoull(v, NULL, 10);
				else if (!strcmp(k, "mem_used")) d->mem_used = strtoull(v, NULL, 10);
				else if (!strcmp(k, "util")) d->util = (unsigned)atoi(v);
				else if (!strcmp(k, "power_mw")) d->power_mw = (unsigned)atoi(v);
				else if (!strcmp(k, "mig")) d->mig = (unsigned)atoi(v);
				else if (!strcmp(k, "gone")) d->gone = (unsigned)atoi(v);
				else if (!strcmp(k, "minor")) d->minor = (unsigned)atoi(v);
				else if (!strcmp(k, "gpm")) d->gpm = (unsigned)atoi(v);
				else if (!strcmp(k, "int_util")) d->int_util = atof(v);
				else if (!strcmp(k, "tensor_util")) d->tensor_util = atof(v);
			}
		} else if (!strcmp(tok, "process") && nprocs < MAX_PROC) {
			struct proc *p = &procs[nprocs++];
			while ((tok = strtok_r(NULL, " \t\r\n", &save))) {
				char k[32], v[128];
				kv(tok, k, sizeof(k), v, sizeof(v));
				if (!strcmp(k, "device")) p->device = (unsigned)atoi(v);
				else if (!strcmp(k, "pid")) p->pid = (unsigned)atoi(v);
				else if (!strcmp(k, "comm")) snprintf(p->comm, sizeof(p->comm), "%s", v);
				else if (!strcmp(k, "mem")) p->mem = strtoull(v, NULL, 10);
				else if (!strcmp(k, "sm") && !strcmp(v, "cpu")) p->sm_cpu = 1;
				else if (!strcmp(k, "sm")) p->sm = (unsigned)atoi(v);
				else if (!strcmp(k, "graphics")) p->graphics = atoi(v);
				else if (!strcmp(k, "mps")) p->mps = atoi(v);
				else if (!strcmp(k, "exited")) p->exited = atoi(v);
			}
		} else if (!strcmp(tok, "error") && nerrs < MAX_ERR) {
			char *fn = strtok_r(NULL, " \t\r\n", &save);
			char *code = strtok_r(NULL, " \t\r\n", &save);
			if (fn && code) {
				snprintf(errs[nerrs].fn, sizeof(errs[nerrs].fn), "%s", fn);
				errs[nerrs++].code = code_of(code);
			}
		}
	}
	fclose(f);
}

static nvmlReturn_t injected(const char *fn)
{
	for (int i = 0; i < nerrs; i++)
		if (!strcmp(errs[i].fn, fn))
			return errs[i].code;
	return NVML_SUCCESS;
}

#define ENTER(fn_) do { if (!inited) return NVML_ERROR_UNINITIALIZED; load(); \
	nvmlReturn_t r_ = injected(fn_); if (r_) return r_; } while (0)

static int ndev(void)
{
	int n = 0;
	while (n < MAX_DEV && devs[n].present)
		n++;
	return n;
}

static struct dev *devof(nvmlDevice_t h, nvmlReturn_t *err)
{
	if (!h || h->index >= MAX_DEV || !devs[h->index].present) { *err = NVML_ERROR_INVALID_ARGUMENT; return NULL; }
	if (devs[h->index].gone) { *err = NVML_ERROR_GPU_IS_LOST; return NULL; }
	*err = NVML_SUCCESS;
	return &devs[h->index];
}

/* Expand the scripted processes into concrete (pid, entry) pairs for a device. */
struct hit { unsigned pid; struct proc *p; };

static int hits_for_kind(unsigned device, int graphics, int mps, struct hit *out, int max)
{
	int n = 0;
	for (int i = 0; i < nprocs && n < max; i++) {
		struct proc *p = &procs[i];
		if (p->device != device || (p->graphics != 0) != (graphics != 0) || (p->mps != 0) != (mps != 0)
		    || p->exited)
			continue;
		if (p->pid) {
			out[n].pid = p->pid;
			out[n++].p = p;
			continue;
		}
		if (!p->comm[0])
			continue;
		DIR *d = opendir("/proc");
		struct dirent *e;
		while (d && (e = readdir(d)) && n < max) {
			if (!isdigit((unsigned char)e->d_name[0]))
				continue;
			char path[64], comm[64] = {0};
			snprintf(path, sizeof(path), "/proc/%s/comm", e->d_name);
			FILE *f = fopen(path, "r");
			if (!f)
				continue;
			if (fgets(comm, sizeof(comm), f)) {
				comm[strcspn(comm, "\n")] = 0;
				if (!strcmp(comm, p->comm)) {
					out[n].pid = (unsigned)atoi(e->d_name);
					out[n++].p = p;
				}
			}
			fclose(f);
		}
		if (d)
			closedir(d);
	}
	return n;
}

static int hits_for(unsigned device, int graphics, struct hit *out, int max)
{
	return hits_for_kind(device, graphics, 0, out, max);
}

/* CPU time (ticks) of pid; -1 if gone */
static long long cpu_ticks(unsigned pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%u/stat", pid);
	FILE *f = fopen(path, "r");
	if (!f) return -1;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	if (!p) return -1;
	unsigned long long ut = 0, st = 0;
	/* fields after comm: state(3) ... utime(14) stime(15) */
	if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2) return -1;
	return (long long)(ut + st);
}

#define MAX_SEEN 256
static struct { unsigned pid; long long ticks; double t; } seen[MAX_SEEN];

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* "sm=cpu": percent of one CPU the process used since the last reading */
static unsigned sm_from_cpu(unsigned pid)
{
	long long t = cpu_ticks(pid);
	double now = now_s();
	int slot = -1;
	for (int i = 0; i < MAX_SEEN; i++) {
		if (seen[i].pid == pid) { slot = i; break; }
		if (slot < 0 && seen[i].pid == 0) slot = i;
	}
	if (slot < 0 || t < 0) return 0;
	unsigned out = 0;
	if (seen[slot].pid == pid && now > seen[slot].t) {
		double pct = 100.0 * (t - seen[slot].ticks) / 100.0 / (now - seen[slot].t);   /* USER_HZ = 100 */
		out = pct < 0 ? 0 : pct > 100 ? 100 : (unsigned)(pct + 0.5);
	}
	seen[slot].pid = pid; seen[slot].ticks = t; seen[slot].t = now;
	return out;
}

nvmlReturn_t nvmlInitWithFlags(unsigned int flags) { (void)flags; inited = 1; load(); return injected("nvmlInit"); }
nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
nvmlReturn_t nvmlInit(void) { return nvmlInitWithFlags(0); }
nvmlReturn_t nvmlShutdown(void) { inited = 0; return NVML_SUCCESS; }

const char *nvmlErrorString(nvmlReturn_t r)
{
	switch (r) {
	case NVML_SUCCESS: return "Success";
	case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
	case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
	case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
	case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
	case NVML_ERROR_NOT_FOUND: return "Not Found";
	case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
	case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
	default: return "Unknown Error";
	}
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *buf, unsigned int len)
{
	ENTER("nvmlSystemGetDriverVersion");
	snprintf(buf, len, "999.99-fake");
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) { ENTER("nvmlDeviceGetCount"); *count = (unsigned)ndev(); return NVML_SUCCESS; }
nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) { return nvmlDeviceGetCount_v2(count); }

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *h)
{
	ENTER("nvmlDeviceGetHandleByIndex");
	if ((int)index >= ndev()) return NVML_ERROR_INVALID_ARGUMENT;
	handles[index].index = index;
	*h = &handles[index];
	return devs[index].gone ? NVML_ERROR_GPU_IS_LOST : NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t h, char *buf, unsigned int len)
{
	nvmlReturn_t e; ENTER("nvmlDeviceGetName");
	struct dev *d = devof(h, &e); if (!d) return e;
	snprintf(buf, len, "%s", d->name);
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t h, char *buf, unsigned int len)
{
	nvmlReturn_t e; ENTER("nvmlDeviceGetUUID");
	struct dev *d = devof(h, &e); if (!d) return e;
	snprintf(buf, len, "%s", d->uuid);
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t h, nvmlUtilization_t *u)
{
	nvmlReturn_t e; ENTER("nvmlDeviceGetUtilizationRates");
	struct dev *d = devof(h, &e); if (!d) return e;
	u->gpu = d->util; u->memory = d->util / 2;
	return NVML_SUCCESS;
}

static unsigned long long used_on(unsigned index, struct dev *d)
{
	struct hit hs[MAX_PROC];
	unsigned long long sum = d->mem_used;
	for (int g = 0; g < 2; g++) {
		int n = hits_for(index, g, hs, MAX_PROC);
		for (int i = 0; i < n; i++) sum += hs[i].p->mem;
	}
	return sum > d->mem_total ? d->mem_total : sum;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t h, nvmlMemory_t *m)
{
	nvmlReturn_t e; ENTER("nvmlDeviceGetMemoryInfo");
	struct dev *d = devof(h, &e); if (!d) return e;
	m->total = d->mem_total; m->used = used_on(h->index, d); m->free = m->total - m->used;
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t h, nvmlMemory_v2_t *m)
{
	nvmlReturn_t e; ENTER("nvmlDeviceGetMemoryInfo");
	struct dev *d = devof(h, &e); if (!d) return e;
	m->total = d->mem_total; m->reserved = 0; m->used = used_on(h->index, d); m->free = m->total - m->used;
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t h, unsigned int *mw)
{
	nvmlReturn_t e; ENTER("nvmlDeviceGetPowerUsage");
	struct dev *d = devof(h, &e); if (!d) return e;
	*mw = d->power_mw;
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t h, unsigned int *cur, unsigned int *pending)
{
	nvmlReturn_t e; ENTER("nvmlDeviceGetMigMode");
	struct dev *d = devof(h, &e); if (!d) return e;
	*cur = *pending = d->mig;
	return NVML_SUCCESS;
}

static nvmlReturn_t running(nvmlDevice_t h, unsigned int *count, nvmlProcessInfo_t *infos, int graphics, const char *fn)
{
	nvmlReturn_t e; ENTER(fn);
	struct dev *d = devof(h, &e); if (!d) return e;
	struct hit hs[MAX_PROC];
	int n = hits_for_kind(h->index, graphics > 1 ? 0 : graphics, graphics > 1, hs, MAX_PROC);
	if (n == 0) { *count = 0; return NVML_SUCCESS; }
	if (!infos || *count < (unsigned)n) { *count = (unsigned)n; return NVML_ERROR_INSUFFICIENT_SIZE; }
	for (int i = 0; i < n; i++) {
		infos[i].pid = hs[i].pid;
		infos[i].usedGpuMemory = hs[i].p->mem;
		infos[i].gpuInstanceId = d->mig ? 0 : 0xFFFFFFFF;
		infos[i].computeInstanceId = d->mig ? 0 : 0xFFFFFFFF;
	}
	*count = (unsigned)n;
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t h, unsigned int *c, nvmlProcessInfo_t *p) { return running(h, c, p, 0, "nvmlDeviceGetComputeRunningProcesses"); }
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t h, unsigned int *c, nvmlProcessInfo_t *p) { return running(h, c, p, 0, "nvmlDeviceGetComputeRunningProcesses"); }
nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v3(nvmlDevice_t h, unsigned int *c, nvmlProcessInfo_t *p) { return running(h, c, p, 1, "nvmlDeviceGetGraphicsRunningProcesses"); }
nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v2(nvmlDevice_t h, unsigned int *c, nvmlProcessInfo_t *p) { return running(h, c, p, 1, "nvmlDeviceGetGraphicsRunningProcesses"); }

nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t h, nvmlProcessUtilizationSample_t *s, unsigned int *count,
					     unsigned long long lastSeen)
{
	nvmlReturn_t e; ENTER("nvmlDeviceGetProcessUtilization");
	struct dev *d = devof(h, &e); if (!d) return e;
	if (d->mig) return NVML_ERROR_NOT_SUPPORTED;   /* as on real MIG devices */
	struct hit hs[MAX_PROC];
	int n = hits_for(h->index, 0, hs, MAX_PROC);
	n += hits_for(h->index, 1, hs + n, MAX_PROC - n);
	for (int i = 0; i < nprocs && n < MAX_PROC; i++)     /* exited: samples only */
		if (procs[i].exited && procs[i].device == h->index && procs[i].pid) {
			hs[n].pid = procs[i].pid;
			hs[n++].p = &procs[i];
		}
	if (n == 0) return NVML_ERROR_NOT_FOUND;       /* no samples since lastSeen */
	if (!s || *count < (unsigned)n) { *count = (unsigned)n; return NVML_ERROR_INSUFFICIENT_SIZE; }
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	unsigned long long now_us = (unsigned long long)ts.tv_sec * 1000000ULL + ts.tv_nsec / 1000;
	(void)lastSeen;
	for (int i = 0; i < n; i++) {
		s[i].pid = hs[i].pid; s[i].timeStamp = now_us;
		s[i].smUtil = hs[i].p->sm_cpu ? sm_from_cpu(hs[i].pid) : hs[i].p->sm;
		s[i].memUtil = hs[i].p->sm / 2; s[i].encUtil = s[i].decUtil = 0;
	}
	*count = (unsigned)n;
	return NVML_SUCCESS;
}

/* graphics=2 in running(): the MPS client list */
nvmlReturn_t nvmlDeviceGetMPSComputeRunningProcesses_v3(nvmlDevice_t h, unsigned int *c, nvmlProcessInfo_t *p) { return running(h, c, p, 2, "nvmlDeviceGetMPSComputeRunningProcesses"); }
nvmlReturn_t nvmlDeviceGetMPSComputeRunningProcesses_v2(nvmlDevice_t h, unsigned int *c, nvmlProcessInfo_t *p) { return running(h, c, p, 2, "nvmlDeviceGetMPSComputeRunningProcesses"); }

nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t h, unsigned int *minor)
{
	nvmlReturn_t e; ENTER("nvmlDeviceGetMinorNumber");
	struct dev *d = devof(h, &e); if (!d) return e;
	*minor = d->minor;
	return NVML_SUCCESS;
}

/* ---- GPM (Hopper and later): the real struct layouts of nvml.h ---- */
#define NVML_GPM_METRIC_INTEGER_UTIL 4
#define NVML_GPM_METRIC_ANY_TENSOR_UTIL 5
#define NVML_GPM_METRIC_MAX 477

typedef struct { unsigned int device; double t; } fake_gpm_sample;
typedef fake_gpm_sample *nvmlGpmSample_t;
typedef struct { char *shortName, *longName, *unit; } nvmlGpmMetricInfo_t;
typedef struct { unsigned int metricId; nvmlReturn_t nvmlReturn; double value; nvmlGpmMetricInfo_t metricInfo; } nvmlGpmMetric_t;
typedef struct { unsigned int version, numMetrics; nvmlGpmSample_t sample1, sample2; nvmlGpmMetric_t metrics[NVML_GPM_METRIC_MAX]; } nvmlGpmMetricsGet_t;
typedef struct { unsigned int version, isSupportedDevice; } nvmlGpmSupport_t;

nvmlReturn_t nvmlGpmQueryDeviceSupport(nvmlDevice_t h, nvmlGpmSupport_t *s)
{
	nvmlReturn_t e; ENTER("nvmlGpmQueryDeviceSupport");
	struct dev *d = devof(h, &e); if (!d) return e;
	s->isSupportedDevice = d->gpm;
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlGpmSampleAlloc(nvmlGpmSample_t *s)
{
	ENTER("nvmlGpmSampleAlloc");
	*s = calloc(1, sizeof(fake_gpm_sample));
	return *s ? NVML_SUCCESS : NVML_ERROR_UNKNOWN;
}

nvmlReturn_t nvmlGpmSampleFree(nvmlGpmSample_t s) { free(s); return NVML_SUCCESS; }

nvmlReturn_t nvmlGpmSampleGet(nvmlDevice_t h, nvmlGpmSample_t s)
{
	nvmlReturn_t e; ENTER("nvmlGpmSampleGet");
	struct dev *d = devof(h, &e); if (!d) return e;
	if (!d->gpm) return NVML_ERROR_NOT_SUPPORTED;
	s->device = h->index; s->t = now_s();
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlGpmMetricsGet(nvmlGpmMetricsGet_t *m)
{
	ENTER("nvmlGpmMetricsGet");
	if (!m || !m->sample1 || !m->sample2 || m->numMetrics > NVML_GPM_METRIC_MAX) return NVML_ERROR_INVALID_ARGUMENT;
	struct dev *d = &devs[m->sample2->device % MAX_DEV];
	for (unsigned i = 0; i < m->numMetrics; i++) {
		unsigned id = m->metrics[i].metricId;
		m->metrics[i].nvmlReturn = NVML_SUCCESS;
		m->metrics[i].value = id == NVML_GPM_METRIC_INTEGER_UTIL ? d->int_util
				    : id == NVML_GPM_METRIC_ANY_TENSOR_UTIL ? d->tensor_util : 0.0;
	}
	return NVML_SUCCESS;
}
