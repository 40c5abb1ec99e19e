#include "ckernels.h"
#if defined(__GLIBC__)
#include <malloc.h>
#endif

void graft_keep_freed_blocks(void) {
#if defined(__GLIBC__)
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}

size_t graft_heap_bytes(void) {
#if defined(__GLIBC__)
    return mallinfo2().arena;
#else
    return 0;
#endif
}
