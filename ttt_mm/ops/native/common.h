/* What every file of fused loops shares: OpenMP (or its stand-ins) and the thresholds. */
#include <math.h>
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#else /* built without OpenMP: every loop runs on the calling thread */
static inline int omp_get_thread_num(void) { return 0; }
static inline int omp_get_num_threads(void) { return 1; }
#endif

/* Loops over fewer values than this run on one thread: waking the others costs more than they save */
#define PARALLEL_MIN 8192

/* |u| beyond this saturates a sigmoid (e^-40 is below double precision); keeps exp far from overflow */
#define CLAMP 40.0
