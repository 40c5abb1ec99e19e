// What a process must do from a signal handler, where Swift cannot run: name the input file whose
// memory map faulted (SIGBUS: the file was truncated while mapped) and remove the partial outputs
// before exiting, instead of dying with "Bus error" and leaving a half-written folder behind.
#define _GNU_SOURCE
#include "ckernels.h"
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define GRAFT_GUARD_SLOTS 1024

// Mappings: [base, base + length) of `path`. A slot is free when its base is 0. Paths are copied at
// registration (outside any handler) and freed at unregistration.
static _Atomic(uintptr_t) map_base[GRAFT_GUARD_SLOTS];
static size_t map_length[GRAFT_GUARD_SLOTS];
static char *map_path[GRAFT_GUARD_SLOTS];

// Partial output folders or files to remove when the process dies of a fault it can report.
static _Atomic(char *) partial[GRAFT_GUARD_SLOTS];

static atomic_int installed;
static pthread_mutex_t registry = PTHREAD_MUTEX_INITIALIZER;  // registrations only; the handler takes no lock

static void write_str(const char *s) {
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t r = write(2, s, n);
        if (r <= 0) return;
        s += r; n -= (size_t)r;
    }
}

// Recursive removal with no allocation beyond what opendir needs; depth-limited.
static void remove_tree(int dirfd, const char *name, int depth) {
    if (unlinkat(dirfd, name, 0) == 0 || depth > 8) return;
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    if (fd < 0) return;
    DIR *d = fdopendir(fd);
    if (!d) { close(fd); return; }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        remove_tree(fd, e->d_name, depth + 1);
    }
    closedir(d);
    unlinkat(dirfd, name, AT_REMOVEDIR);
}

static void on_bus(int sig, siginfo_t *info, void *context) {
    (void)context;
    uintptr_t addr = (uintptr_t)info->si_addr;
    const char *path = NULL;
    for (int i = 0; i < GRAFT_GUARD_SLOTS; i++) {
        uintptr_t b = atomic_load(&map_base[i]);
        if (b != 0 && addr >= b && addr < b + map_length[i]) { path = map_path[i]; break; }
    }
    if (path == NULL) {  // not one of ours: die as the signal would have
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    write_str("\nerror: ");
    write_str(path);
    write_str(": the file changed while it was being read (it is now shorter than when it was opened); "
              "nothing was written. Run again once the file is complete.\n");
    for (int i = 0; i < GRAFT_GUARD_SLOTS; i++) {
        char *p = atomic_load(&partial[i]);
        if (p) remove_tree(AT_FDCWD, p, 0);
    }
    _exit(1);
}

static void install(void) {
    int expected = 0;
    if (!atomic_compare_exchange_strong(&installed, &expected, 1)) return;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_bus;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
}

int graft_guard_mapping(const void *base, size_t length, const char *path) {
    if (base == NULL || length == 0) return -1;
    install();
    char *copy = strdup(path);
    if (!copy) return -1;
    pthread_mutex_lock(&registry);
    for (int i = 0; i < GRAFT_GUARD_SLOTS; i++) {
        if (atomic_load(&map_base[i]) != 0) continue;
        map_length[i] = length;
        free(map_path[i]);
        map_path[i] = copy;
        // Publish the base last: the handler reads length and path only after seeing it.
        atomic_store(&map_base[i], (uintptr_t)base);
        pthread_mutex_unlock(&registry);
        return i;
    }
    pthread_mutex_unlock(&registry);
    free(copy);
    return -1;  // table full: the mapping works, a fault in it is reported as a plain SIGBUS
}

void graft_unguard_mapping(int slot) {
    if (slot < 0 || slot >= GRAFT_GUARD_SLOTS) return;
    pthread_mutex_lock(&registry);
    atomic_store(&map_base[slot], 0);
    pthread_mutex_unlock(&registry);
}

int graft_guard_partial(const char *path) {
    install();
    char *copy = strdup(path);
    if (!copy) return -1;
    for (int i = 0; i < GRAFT_GUARD_SLOTS; i++) {
        char *none = NULL;
        if (atomic_compare_exchange_strong(&partial[i], &none, copy)) return i;
    }
    free(copy);
    return -1;
}

void graft_unguard_partial(int slot) {
    if (slot < 0 || slot >= GRAFT_GUARD_SLOTS) return;
    char *p = atomic_exchange(&partial[slot], NULL);
    free(p);
}

void graft_ignore_file_size_signal(void) { signal(SIGXFSZ, SIG_IGN); }

#if defined(__linux__)
#include <sys/syscall.h>
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif
int graft_exchange_paths(const char *a, const char *b) {
    return (int)syscall(SYS_renameat2, AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE);
}
#elif defined(__APPLE__)
#include <stdio.h>
int graft_exchange_paths(const char *a, const char *b) { return renamex_np(a, b, RENAME_SWAP); }
#else
#include <errno.h>
int graft_exchange_paths(const char *a, const char *b) { (void)a; (void)b; errno = ENOTSUP; return -1; }
#endif
