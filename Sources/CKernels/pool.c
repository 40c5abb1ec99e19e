// A fork–join pool for many short jobs (decode-time matrix–vector products: ~200 per token, tens of
// microseconds each). Waking threads through the OS costs more than such a job; these workers spin on a
// shared counter between jobs and only fall asleep after ~0.5 ms without work. While spinning they call
// sched_yield every few hundred pauses, so a waiting worker gives its core to a runnable thread of
// another process (a training run beside a server) instead of holding it for its whole time slice.
//
// A job is split into more chunks than threads, and each thread — the caller included — claims the next
// chunk when it finishes one (as ggml schedules its products). With a fixed part per thread, a thread
// whose core another process shares finishes its part late and every job waits for it: decode beside
// one busy core ran at 0.28× its speed alone. With claimed chunks that thread simply takes fewer, and a
// worker that has not woken yet when the chunks run out is not waited for at all.
#include "ckernels.h"
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
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

static int pool_threads = 1;  // caller + workers
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
// The job's generation (high 32 bits) and its chunks not yet claimed (low 32 bits): one word, so that a
// claim (compare-and-swap) can only succeed for the job whose generation the claimer saw.
static _Atomic uint64_t state = 0;
static _Atomic int done = 0;  // chunks finished in the current job
static _Atomic int sleepers = 0;
static atomic_flag busy = ATOMIC_FLAG_INIT;
static graft_job_fn job_fn;
static void *job_ctx;
static int job_chunks;
static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;

// Claims and runs chunks of generation `gen` until none is left (or a newer job replaced it). The job's
// function and context are read after a successful claim: the caller cannot post another job while a
// claimed chunk is unfinished.
static void run_chunks(uint32_t gen) {
    for (;;) {
        uint64_t s = atomic_load(&state);
        uint32_t left = (uint32_t)s;
        if ((uint32_t)(s >> 32) != gen || left == 0) return;
        if (!atomic_compare_exchange_weak(&state, &s, s - 1)) continue;
        job_fn(job_ctx, job_chunks - (int)left, job_chunks);
        atomic_fetch_add(&done, 1);
    }
}

static void *worker(void *arg) {
    (void)arg;
    uint32_t seen = 0;  // generation 0 is the pool's start: a job posted before this thread ran is still seen
    for (;;) {
        int spins = 0;
        while ((uint32_t)(atomic_load(&state) >> 32) == seen) {
            if (++spins < SPINS_BEFORE_SLEEP) {
                if (spins % SPINS_PER_YIELD == 0) sched_yield(); else CPU_RELAX();
                continue;
            }
            pthread_mutex_lock(&mutex);
            atomic_fetch_add(&sleepers, 1);
            while ((uint32_t)(atomic_load(&state) >> 32) == seen) pthread_cond_wait(&wake, &mutex);
            atomic_fetch_sub(&sleepers, 1);
            pthread_mutex_unlock(&mutex);
        }
        seen = (uint32_t)(atomic_load(&state) >> 32);
        run_chunks(seen);
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
        if (pthread_create(&t, &attr, worker, NULL) == 0) started++;
        pthread_attr_destroy(&attr);
    }
    pool_threads = started;
}

int graft_pool_threads(void) {
    pthread_once(&pool_once, start_pool);
    return pool_threads;
}

void graft_pool_run(graft_job_fn fn, void *ctx, int chunks) {
    pthread_once(&pool_once, start_pool);
    if (chunks <= 0) return;
    // One chunk, one thread, or nested or concurrent use (a job that runs a pool job, two threads at
    // once): run inline.
    if (chunks == 1 || pool_threads == 1 || atomic_flag_test_and_set(&busy)) {
        for (int c = 0; c < chunks; c++) fn(ctx, c, chunks);
        return;
    }
    job_fn = fn; job_ctx = ctx; job_chunks = chunks;
    atomic_store(&done, 0);
    uint32_t gen = (uint32_t)(atomic_load(&state) >> 32) + 1;
    atomic_store(&state, ((uint64_t)gen << 32) | (uint32_t)chunks);
    if (atomic_load(&sleepers) > 0) {
        pthread_mutex_lock(&mutex);
        pthread_cond_broadcast(&wake);
        pthread_mutex_unlock(&mutex);
    }
    run_chunks(gen);
    for (int spins = 1; atomic_load(&done) < chunks; spins++) {
        if (spins % SPINS_PER_YIELD == 0) sched_yield(); else CPU_RELAX();
    }
    atomic_flag_clear(&busy);
}
