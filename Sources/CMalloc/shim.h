#ifndef SWIFT_CELERY_CMALLOC_SHIM_H
#define SWIFT_CELERY_CMALLOC_SHIM_H
// glibc's malloc_trim, which Swift's Glibc module does not declare (ExecutablePages.trimHeap).
#if defined(__linux__)
#include <malloc.h>
#endif
#endif
