/*
 * kube_harness: what the kube integration tests share: starting the Kubernetes API
 * emulator (tests/emulator/kube_emulator.py, with the python3 found on PATH) in a
 * temporary state directory, waiting for it to be ready, building a client from the
 * kubeconfig it writes, fault injection, and stopping it.
 */
#ifndef KUBE_HARNESS_H
#define KUBE_HARNESS_H

#include "kube_client.h"

#include <sys/types.h>

typedef struct kh_emulator {
    char dir[256];       /* state directory (removed by kh_stop) */
    char kubeconfig[300];
    char server[128];    /* https://127.0.0.1:PORT */
    char host[64];
    char port[16];
    char token[128];
    pid_t pid;
} kh_emulator;

/* Starts the emulator with extra arguments (NULL-terminated list, may be NULL);
 * returns 0 when ready within 30 s. */
int kh_start(kh_emulator *e, const char *const *extra);
/* SIGTERM, wait, remove the state directory. */
void kh_stop(kh_emulator *e);
/* A client for the emulator's kubeconfig; opts may be NULL. */
kube_client *kh_client(kh_emulator *e, const kube_client_options *opts);
/* POSTs a fault-injection body (JSON text) to /_emulator/faults; 0 on success. */
int kh_fault(kube_client *c, const char *json_text);
/* Milliseconds on the monotonic clock. */
double kh_now_ms(void);
void kh_sleep_ms(double ms);

#endif
