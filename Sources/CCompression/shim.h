#ifndef SWIFT_CELERY_CCOMPRESSION_SHIM_H
#define SWIFT_CELERY_CCOMPRESSION_SHIM_H
#include <zlib.h>
#include <bzlib.h>
#include <lzma.h>
#endif
