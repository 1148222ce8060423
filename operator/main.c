/*
 * kadet-operator: process shell of the operator. Parses the settings (opconfig), sets up
 * logging and the metrics registry, serves /healthz, /readyz and /metrics (httpd), and
 * shuts down in order on SIGTERM or SIGINT.
 *
 * Signals are blocked in every thread before any thread starts and taken synchronously
 * with sigwait() here, so no work runs in a signal handler and every thread sees the same
 * shutdown. The controllers (informers, work queue, AgentJob reconciler, scheduler host,
 * leader election) plug in between "serving" and the wait: each registers a readiness
 * check with the HTTP server and is stopped in reverse order after the signal (see
 * docs/operator.md, "Process lifecycle").
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "httpd.h"
#include "kd_error.h"
#include "kd_log.h"
#include "metrics.h"
#include "opconfig.h"

int main(int argc, char **argv)
{
    kd_log_set_component("operator");
    opc_config cfg;
    opc_action action;
    char err[512] = "";
    int rc = opc_parse(&cfg, argc, argv, &action, err, sizeof err);
    if (rc != KD_OK) {
        fprintf(stderr, "kadet-operator: %s\n", err);
        return 2;
    }
    if (action == OPC_HELP) {
        opc_usage(stdout, "kadet-operator");
        return 0;
    }
    if (action == OPC_VERSION) {
        printf("kadet-operator %s\n", KADET_VERSION);
        return 0;
    }
    kd_log_set_level((kd_log_level)cfg.log_level);

    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN); /* a scraper hanging up must not kill the operator */

    KD_INFO("starting version=%s", KADET_VERSION);
    opc_log(&cfg);

    op_metrics metrics;
    rc = op_metrics_init(&metrics, err, sizeof err);
    if (rc != KD_OK) {
        KD_ERROR("metrics init failed err=\"%s\"", err);
        return 1;
    }
    /* Without election this replica acts alone; with it, the lease component sets 1. */
    opm_set(metrics.leader, NULL, cfg.leader_elect ? 0.0 : 1.0);

    op_httpd *httpd = NULL;
    rc = op_httpd_start(&httpd, cfg.metrics_host, cfg.metrics_port, metrics.reg, err,
                        sizeof err);
    if (rc != KD_OK) {
        KD_ERROR("http server failed err=\"%s\"", err);
        op_metrics_free(&metrics);
        return 1;
    }
    KD_INFO("serving endpoints=/healthz,/readyz,/metrics addr=%s port=%d",
            cfg.metrics_host[0] ? cfg.metrics_host : "0.0.0.0", op_httpd_port(httpd));

    int sig = 0;
    while (sigwait(&stop_signals, &sig) != 0)
        ;
    KD_INFO("shutting down signal=%s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    op_httpd_set_shutting_down(httpd);
    op_httpd_stop(&httpd);
    op_metrics_free(&metrics);
    KD_INFO("stopped");
    return 0;
}
