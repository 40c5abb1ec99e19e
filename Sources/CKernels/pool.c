// A fork–join pool for many short jobs (decode-time matrix–vector products: ~200 per token, tens of
// microseconds each). Waking threads through the OS costs more than such a job; these workers spin on a
// shared generation counter between jobs and only fall asleep after ~0.5 ms without work. While
// spinning they call sched_yield every few hundred pauses, so a waiting worker gives its core to a
// runnable thread of another process (a training run beside a server) instead of holding it for its
// whole time slice; on an idle machine the yield returns at once.
#include "ckernels.h"
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

#define MAX_WORKERS 63
#define SPINS_BEFORE_SLEEP 20000
#define SPINS_PER_YIELD 256

static int pool_parts = 1;                // caller + workers
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static _Atomic unsigned long generation = 0;
static _Atomic int remaining = 0;
static _Atomic int sleepers = 0;
static atomic_flag busy = ATOMIC_FLAG_INIT;
static graft_job_fn job_fn;
static void *job_ctx;
static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;

static void *worker(void *arg) {
    int part = (int)(intptr_t)arg;
    // Generation 0 is the pool's start: a job posted before this thread got going is still seen.
    unsigned long seen = 0;
    for (;;) {
        int spins = 0;
        while (atomic_load(&generation) == seen) {
            if (++spins < SPINS_BEFORE_SLEEP) {
                if (spins % SPINS_PER_YIELD == 0) sched_yield(); else CPU_RELAX();
                continue;
            }
            pthread_mutex_lock(&mutex);
            atomic_fetch_add(&sleepers, 1);
            while (atomic_load(&generation) == seen) pthread_cond_wait(&wake, &mutex);
            atomic_fetch_sub(&sleepers, 1);
            pthread_mutex_unlock(&mutex);
        }
        seen = atomic_load(&generation);
        job_fn(job_ctx, part, pool_parts);
        atomic_fetch_sub(&remaining, 1);
    }
    return NULL;
}

static void start_pool(void) {
    long n = 0;
    const char *env = getenv("GRAFT_THREADS");
    if (env) n = atol(env);
    if (n <= 0) n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    if (n > MAX_WORKERS + 1) n = MAX_WORKERS + 1;
    int started = 1;
    for (long i = 1; i < n; i++) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &attr, worker, (void *)(intptr_t)i) == 0) started++;
        pthread_attr_destroy(&attr);
        if (started != i + 1) break;  // parts must be 0..started-1 with no gaps
    }
    pool_parts = started;
}

int graft_pool_parts(void) {
    pthread_once(&pool_once, start_pool);
    return pool_parts;
}

void graft_pool_run(graft_job_fn fn, void *ctx) {
    pthread_once(&pool_once, start_pool);
    // Nested or concurrent use (a job that runs a pool job, two threads at once): run inline.
    if (pool_parts == 1 || atomic_flag_test_and_set(&busy)) {
        for (int p = 0; p < pool_parts; p++) fn(ctx, p, pool_parts);
        return;
    }
    job_fn = fn; job_ctx = ctx;
    atomic_store(&remaining, pool_parts - 1);
    atomic_fetch_add(&generation, 1);
    if (atomic_load(&sleepers) > 0) {
        pthread_mutex_lock(&mutex);
        pthread_cond_broadcast(&wake);
        pthread_mutex_unlock(&mutex);
    }
    fn(ctx, 0, pool_parts);
    for (int spins = 1; atomic_load(&remaining) > 0; spins++) {
        if (spins % SPINS_PER_YIELD == 0) sched_yield(); else CPU_RELAX();
    }
    atomic_flag_clear(&busy);
}
