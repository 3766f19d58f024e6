#include "trace/trace-block_softdev.h"
