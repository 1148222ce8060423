/*
 * kube_harness: emulator process management for the kube integration tests. The
 * emulator is spawned with posix_spawnp so that "python3" is looked up on PATH, its
 * output goes to DIR/emulator.log, and readiness is the DIR/ready file it writes last.
 */
#include "kd_clock.h"
#include "kube_harness.h"

#include "kd_error.h"
#include "kd_yaml.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

double kh_now_ms(void)
{
    return kd_mono_ms();
}

void kh_sleep_ms(double ms)
{
    long whole = (long)ms;
    struct timespec ts = {whole / 1000, (whole % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static int read_small(const char *path, char *buf, size_t len)
{
    char *data = NULL;
    size_t n = 0;
    char err[128];
    if (kd_read_file(path, 4096, &data, &n, err, sizeof err) != KD_OK) {
        return -1;
    }
    while (n > 0 && (data[n - 1] == '\n' || data[n - 1] == '\r')) {
        data[--n] = '\0';
    }
    snprintf(buf, len, "%s", data);
    free(data);
    return 0;
}

int kh_start(kh_emulator *e, const char *const *extra)
{
    memset(e, 0, sizeof *e);
    snprintf(e->dir, sizeof e->dir, "/tmp/kd-kube-emu-XXXXXX");
    if (mkdtemp(e->dir) == NULL) {
        return -1;
    }
    const char *src = getenv("KADET_SOURCE_DIR");
    char script[512], log[300];
    snprintf(script, sizeof script, "%s/tests/emulator/kube_emulator.py",
             src != NULL ? src : ".");
    snprintf(log, sizeof log, "%s/emulator.log", e->dir);
    const char *argv[32] = {"python3", script, "--state-dir", e->dir};
    int argc = 4;
    for (int i = 0; extra != NULL && extra[i] != NULL && argc < 30; i++) {
        argv[argc++] = extra[i];
    }
    argv[argc] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    int rc = posix_spawnp(&e->pid, "python3", &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        fprintf(stderr, "kube_harness: cannot spawn python3: %s\n", strerror(rc));
        e->pid = 0;
        return -1;
    }
    char ready[300];
    snprintf(ready, sizeof ready, "%s/ready", e->dir);
    double deadline = kh_now_ms() + 30000;
    struct stat st;
    while (stat(ready, &st) != 0) {
        int status;
        if (waitpid(e->pid, &status, WNOHANG) == e->pid) {
            fprintf(stderr, "kube_harness: emulator exited early; see %s\n", log);
            e->pid = 0;
            return -1;
        }
        if (kh_now_ms() > deadline) {
            fprintf(stderr, "kube_harness: emulator not ready after 30 s\n");
            kh_stop(e);
            return -1;
        }
        kh_sleep_ms(20);
    }
    char path[300];
    snprintf(e->kubeconfig, sizeof e->kubeconfig, "%s/kubeconfig", e->dir);
    snprintf(path, sizeof path, "%s/port", e->dir);
    read_small(path, e->port, sizeof e->port);
    snprintf(path, sizeof path, "%s/token", e->dir);
    read_small(path, e->token, sizeof e->token);
    read_small(ready, e->server, sizeof e->server);
    snprintf(e->host, sizeof e->host, "127.0.0.1");
    return 0;
}

void kh_stop(kh_emulator *e)
{
    if (e->pid > 0) {
        kill(e->pid, SIGTERM);
        int status;
        double deadline = kh_now_ms() + 5000;
        while (waitpid(e->pid, &status, WNOHANG) == 0) {
            if (kh_now_ms() > deadline) {
                kill(e->pid, SIGKILL);
                waitpid(e->pid, &status, 0);
                break;
            }
            kh_sleep_ms(20);
        }
        e->pid = 0;
    }
    if (e->dir[0] != '\0' && getenv("KADET_KEEP_EMULATOR_DIR") == NULL) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", e->dir);
        if (system(cmd) != 0) {
            fprintf(stderr, "kube_harness: could not remove %s\n", e->dir);
        }
    }
    e->dir[0] = '\0';
}

kube_client *kh_client(kh_emulator *e, const kube_client_options *opts)
{
    kube_config cfg;
    char err[512];
    if (kube_config_load(e->kubeconfig, NULL, &cfg, err, sizeof err) != KD_OK) {
        fprintf(stderr, "kube_harness: %s\n", err);
        return NULL;
    }
    kube_client *c = NULL;
    if (kube_client_new(&cfg, opts, &c, err, sizeof err) != KD_OK) {
        fprintf(stderr, "kube_harness: %s\n", err);
    }
    kube_config_clear(&cfg);
    return c;
}

int kh_fault(kube_client *c, const char *json_text)
{
    json_t *body = json_loads(json_text, 0, NULL);
    if (body == NULL) {
        return -1;
    }
    kube_error e;
    int rc = kube_request(c, "POST", "/_emulator/faults", NULL, body, NULL, NULL, &e);
    json_decref(body);
    if (rc != KD_OK) {
        fprintf(stderr, "kube_harness: fault %s: %s (%s)\n", json_text, kd_strerror(rc),
                e.message);
        return -1;
    }
    return 0;
}
