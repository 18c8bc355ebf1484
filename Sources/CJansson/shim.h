#ifndef SWIFT_CELERY_CJANSSON_SHIM_H
#define SWIFT_CELERY_CJANSSON_SHIM_H
#include <jansson.h>
#endif
