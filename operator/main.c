/*
 * kadet-operator: process shell of the operator. Parses the settings (opconfig), sets up
 * logging and the metrics registry, serves /healthz, /readyz and /metrics (httpd), loads
 * the cluster configuration and builds the Kubernetes client, runs leader election when
 * asked (--leader-elect), and shuts down in order on SIGTERM or SIGINT.
 *
 * Signals are blocked in every thread before any thread starts and taken synchronously
 * with sigwait() here, so no work runs in a signal handler and every thread sees the same
 * shutdown. The controllers (informers, work queue, AgentJob reconciler, scheduler host,
 * leader election) plug in between "serving" and the wait: each registers a readiness
 * check with the HTTP server and is stopped in reverse order after the signal (see
 * docs/operator.md, "Process lifecycle").
 */
#include <curl/curl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "httpd.h"
#include "kd_error.h"
#include "kd_log.h"
#include "kube_client.h"
#include "kube_config.h"
#include "leader.h"
#include "metrics.h"
#include "opconfig.h"

/* Leader election callbacks: they run on the elector's thread and only flip the gauge
 * and log; the controllers will start and stop their workers here. */
static void on_started_leading(void *ud)
{
    op_metrics *m = ud;
    opm_set(m->leader, NULL, 1.0);
    KD_INFO("leading: this replica acts");
}

static void on_stopped_leading(void *ud)
{
    op_metrics *m = ud;
    opm_set(m->leader, NULL, 0.0);
    KD_INFO("stopped leading: this replica stands by");
}

static void on_new_leader(void *ud, const char *identity)
{
    (void)ud;
    KD_INFO("leader observed holder=%s", identity[0] != '\0' ? identity : "(none)");
}

/* Loads the kubeconfig or the in-cluster configuration and builds the client. */
static int connect_cluster(const opc_config *cfg, kube_client **client, char *err,
                           size_t errlen)
{
    kube_config kc;
    memset(&kc, 0, sizeof kc);
    const char *context = cfg->context[0] != '\0' ? cfg->context : NULL;
    int rc = cfg->kubeconfig[0] != '\0'
                 ? kube_config_load(cfg->kubeconfig, context, &kc, err, errlen)
                 : kube_config_auto(context, &kc, err, errlen);
    if (rc != KD_OK)
        return rc;
    KD_INFO("cluster server=%s context=%s", kc.server, kc.context != NULL ? kc.context : "");
    rc = kube_client_new(&kc, NULL, client, err, errlen);
    kube_config_clear(&kc);
    return rc;
}

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

    int status = 1;
    kube_client *client = NULL;
    leader_elector *elector = NULL;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    rc = connect_cluster(&cfg, &client, err, sizeof err);
    if (rc != KD_OK) {
        KD_ERROR("cluster configuration failed err=\"%s\"", err);
        goto out;
    }
    if (cfg.leader_elect) {
        double lease_s = (double)cfg.lease_duration_ms / 1000.0;
        leader_options lo = {
            .namespace = cfg.lease_namespace,
            .name = cfg.lease_name,
            .identity = cfg.identity,
            .lease_duration_s = lease_s,
            .renew_deadline_s = lease_s * 2.0 / 3.0,
            .retry_period_s = lease_s * 2.0 / 15.0,
            .on_started = on_started_leading,
            .on_stopped = on_stopped_leading,
            .on_new_leader = on_new_leader,
            .ud = &metrics,
        };
        rc = leader_new(client, &lo, &elector, err, sizeof err);
        if (rc == KD_OK)
            rc = leader_start(elector);
        if (rc != KD_OK) {
            KD_ERROR("leader election failed err=\"%s\"", err);
            goto out;
        }
        KD_INFO("leader election lease=%s/%s identity=%s", cfg.lease_namespace, cfg.lease_name,
                cfg.identity);
    }

    int sig = 0;
    while (sigwait(&stop_signals, &sig) != 0)
        ;
    KD_INFO("shutting down signal=%s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    status = 0;
out:
    op_httpd_set_shutting_down(httpd);
    /* Releasing the Lease first lets a standby take over while we finish stopping. */
    leader_free(&elector);
    kube_client_free(&client);
    curl_global_cleanup();
    op_httpd_stop(&httpd);
    op_metrics_free(&metrics);
    KD_INFO("stopped status=%d", status);
    return status;
}
