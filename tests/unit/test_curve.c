/* test_curve: common/kd_curve: key files (format, mismatch, permissions), and the ZAP
 * handler admitting the job key (CURVE and the data plane's PLAIN credential) and the
 * operator key on the metrics domain only, refusing and counting everyone else before any
 * message is delivered. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <zmq.h>

#include "kd_curve.h"
#include "kd_error.h"

static char dir[64];

static void put(const char *name, const char *text, mode_t mode)
{
    char p[128];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    unlink(p);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    chmod(p, mode);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/kd-curve-test.XXXXXX");
    assert_non_null(mkdtemp(dir));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    kd_curve_unmake(dir);
    rmdir(dir);
    return 0;
}

static void test_no_directory_means_unauthenticated(void **state)
{
    (void)state;
    kd_curve_keys k;
    char err[256];
    unsetenv(KD_CURVE_ENV);
    assert_int_equal(kd_curve_load(NULL, &k, err, sizeof err), KD_OK);
    assert_int_equal(k.enabled, 0);
}

static void test_made_keys_load_and_are_private(void **state)
{
    (void)state;
    char err[256];
    kd_curve_unmake(dir);
    assert_int_equal(kd_curve_make(dir, err, sizeof err), KD_OK);
    struct stat st;
    char p[128];
    snprintf(p, sizeof p, "%s/agent.key", dir);
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    kd_curve_keys k;
    assert_int_equal(kd_curve_load(dir, &k, err, sizeof err), KD_OK);
    assert_int_equal(k.enabled, 1);
    assert_int_equal(strlen(k.pub), KD_CURVE_KEY_LEN);
    assert_int_equal(k.have_operator, 0);
    assert_int_equal(strlen(k.plain_pass), 64);
    /* Through the environment too. */
    setenv(KD_CURVE_ENV, dir, 1);
    kd_curve_keys e;
    assert_int_equal(kd_curve_load(NULL, &e, err, sizeof err), KD_OK);
    assert_string_equal(e.pub, k.pub);
    unsetenv(KD_CURVE_ENV);
    /* A secret key others may read is refused when it is ours. */
    chmod(p, 0644);
    assert_int_equal(kd_curve_load(dir, &k, err, sizeof err), KD_EFORBIDDEN);
    assert_non_null(strstr(err, "agent.key"));
    chmod(p, 0600);
}

static void test_malformed_key_files_are_refused_naming_the_file(void **state)
{
    (void)state;
    char err[256], pub[41], sec[41], pub2[41], sec2[41];
    kd_curve_keys k;
    assert_int_equal(zmq_curve_keypair(pub, sec), 0);
    assert_int_equal(zmq_curve_keypair(pub2, sec2), 0);
    char line[64];
    snprintf(line, sizeof line, "%s\n", sec);
    put("agent.key", line, 0600);
    put("agent.pub", "short\n", 0644);
    assert_int_equal(kd_curve_load(dir, &k, err, sizeof err), KD_EFORMAT);
    assert_non_null(strstr(err, "agent.pub"));
    put("agent.pub", "0123456789012345678901234567890123456789\n", 0644); /* not Z85 */
    assert_int_not_equal(kd_curve_load(dir, &k, err, sizeof err), KD_OK);
    snprintf(line, sizeof line, "%s\nextra\n", pub);
    put("agent.pub", line, 0644);
    assert_int_equal(kd_curve_load(dir, &k, err, sizeof err), KD_EFORMAT);
    snprintf(line, sizeof line, "%s", pub2); /* another key's public half */
    put("agent.pub", line, 0644);
    assert_int_equal(kd_curve_load(dir, &k, err, sizeof err), KD_EFORMAT);
    assert_non_null(strstr(err, "not the public key"));
    snprintf(line, sizeof line, "%s\r\n", pub); /* CRLF is one line too */
    put("agent.pub", line, 0644);
    assert_int_equal(kd_curve_load(dir, &k, err, sizeof err), KD_OK);
    put("operator.pub", "garbage", 0644);
    assert_int_equal(kd_curve_load(dir, &k, err, sizeof err), KD_EFORMAT);
    assert_non_null(strstr(err, "operator.pub"));
    assert_int_equal(k.enabled, 0);
    snprintf(line, sizeof line, "%s\n", pub2);
    put("operator.pub", line, 0644);
    assert_int_equal(kd_curve_load(dir, &k, err, sizeof err), KD_OK);
    assert_int_equal(k.have_operator, 1);
    assert_string_equal(k.op_pub, pub2);
    kd_curve_unmake(dir);
    assert_int_equal(kd_curve_load(dir, &k, err, sizeof err), KD_EIO);
}

/* Connects a client configured by cfg to a server endpoint once (no reconnection) and
 * returns whether a message could be queued on a connection that passed the handshake
 * (ZMQ_IMMEDIATE: nothing is queued for a connection that never completes). */
typedef void (*client_cfg)(void *sock, const void *arg);

static int crosses(void *ctx, const char *ep, client_cfg cfg, const void *arg, int expect)
{
    void *push = zmq_socket(ctx, ZMQ_PUSH);
    int linger = 2000, tmo = expect ? 3000 : 700, one = 1, never = -1;
    zmq_setsockopt(push, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(push, ZMQ_SNDTIMEO, &tmo, sizeof tmo);
    zmq_setsockopt(push, ZMQ_IMMEDIATE, &one, sizeof one);
    zmq_setsockopt(push, ZMQ_RECONNECT_IVL, &never, sizeof never);
    if (cfg != NULL)
        cfg(push, arg);
    assert_int_equal(zmq_connect(push, ep), 0);
    int sent = zmq_send(push, "hi", 2, 0) == 2;
    zmq_close(push);
    assert_int_equal(sent, expect);
    return sent;
}

static void cfg_job(void *s, const void *k) { kd_curve_job_client(s, k, 0); }
static void cfg_plain(void *s, const void *k) { kd_curve_job_client(s, k, 1); }
static void cfg_stranger(void *s, const void *k)
{
    char pub[41], sec[41];
    zmq_curve_keypair(pub, sec);
    kd_curve_client(s, ((const kd_curve_keys *)k)->pub, pub, sec);
}
static void cfg_operator(void *s, const void *arg)
{
    const char *const *op = arg; /* {server pub, op pub, op sec} */
    kd_curve_client(s, op[0], op[1], op[2]);
}
static void cfg_wrong_plain(void *s, const void *k)
{
    (void)k;
    zmq_setsockopt(s, ZMQ_PLAIN_USERNAME, "kadet", 5);
    zmq_setsockopt(s, ZMQ_PLAIN_PASSWORD, "guess", 5);
}

static int received(void *pull)
{
    char buf[8];
    int n, got = 0;
    while ((n = zmq_recv(pull, buf, sizeof buf, ZMQ_DONTWAIT)) >= 0)
        got++;
    return got;
}

static void test_zap_admits_only_the_job_key(void **state)
{
    (void)state;
    char err[256], op_pub[41], op_sec[41], line[64];
    assert_int_equal(kd_curve_make(dir, err, sizeof err), KD_OK);
    assert_int_equal(zmq_curve_keypair(op_pub, op_sec), 0);
    snprintf(line, sizeof line, "%s\n", op_pub);
    put("operator.pub", line, 0644);
    kd_curve_keys k;
    assert_int_equal(kd_curve_load(dir, &k, err, sizeof err), KD_OK);
    void *ctx = zmq_ctx_new();
    kd_zap *z = NULL;
    assert_int_equal(kd_zap_start(&z, ctx, &k, err, sizeof err), KD_OK);
    void *ctl = zmq_socket(ctx, ZMQ_PULL), *met = zmq_socket(ctx, ZMQ_PULL),
         *data = zmq_socket(ctx, ZMQ_PULL);
    int linger = 0, rto = 2000;
    void *socks[3] = {ctl, met, data};
    for (int i = 0; i < 3; i++) {
        zmq_setsockopt(socks[i], ZMQ_LINGER, &linger, sizeof linger);
        zmq_setsockopt(socks[i], ZMQ_RCVTIMEO, &rto, sizeof rto);
    }
    assert_int_equal(kd_curve_server(ctl, &k, KD_ZAP_CONTROL, 0), 0);
    assert_int_equal(kd_curve_server(met, &k, KD_ZAP_METRICS, 0), 0);
    assert_int_equal(kd_curve_server(data, &k, KD_ZAP_DATA, 1), 0);
    kd_zap_watch(z, ctl, "control");
    char ep[3][128];
    for (int i = 0; i < 3; i++) {
        assert_int_equal(zmq_bind(socks[i], "tcp://127.0.0.1:*"), 0);
        size_t l = sizeof ep[i];
        zmq_getsockopt(socks[i], ZMQ_LAST_ENDPOINT, ep[i], &l);
    }
    const char *op[3] = {k.pub, op_pub, op_sec};
    /* The job key everywhere it belongs; its PLAIN credential on the data plane. */
    crosses(ctx, ep[0], cfg_job, &k, 1);
    crosses(ctx, ep[1], cfg_job, &k, 1);
    crosses(ctx, ep[2], cfg_plain, &k, 1);
    /* Strangers, no security at all, a guessed password: refused, and none of their
     * messages arrives. The operator is admitted on control (its BATCH) and metrics, with
     * its own user id, which the coordinator checks. */
    crosses(ctx, ep[0], cfg_stranger, &k, 0);
    crosses(ctx, ep[0], cfg_operator, op, 1);
    crosses(ctx, ep[0], NULL, NULL, 0);
    crosses(ctx, ep[2], cfg_wrong_plain, &k, 0);
    crosses(ctx, ep[2], cfg_stranger, &k, 0); /* CURVE to a PLAIN server: mechanism mismatch */
    crosses(ctx, ep[1], cfg_operator, op, 1);
    usleep(300 * 1000);
    char buf[8];
    const char *uids[2] = {KD_ZAP_USER_JOB, KD_ZAP_USER_OPERATOR};
    for (int i = 0; i < 2; i++) { /* the job key's, then the operator's */
        zmq_msg_t m;
        zmq_msg_init(&m);
        assert_int_equal(zmq_msg_recv(&m, ctl, 0), 2);
        const char *uid = zmq_msg_gets(&m, "User-Id");
        assert_non_null(uid);
        assert_string_equal(uid, uids[i]);
        zmq_msg_close(&m);
    }
    assert_int_equal(received(ctl), 0);
    assert_int_equal(zmq_recv(met, buf, sizeof buf, 0), 2);
    assert_int_equal(zmq_recv(met, buf, sizeof buf, 0), 2); /* job key, then the operator */
    assert_int_equal(received(met), 0);
    assert_int_equal(zmq_recv(data, buf, sizeof buf, 0), 2);
    assert_int_equal(received(data), 0);
    kd_zap_stats zs;
    kd_zap_get_stats(z, &zs);
    printf("admitted=%llu refused=%llu handshakes=%llu\n", (unsigned long long)zs.admitted,
           (unsigned long long)zs.refused, (unsigned long long)zs.handshakes);
    assert_int_equal(zs.admitted, 5);
    assert_int_equal(zs.refused, 2); /* stranger, guessed password */
    assert_true(zs.handshakes >= 1); /* the unauthenticated client on the watched socket */
    for (int i = 0; i < 3; i++)
        zmq_close(socks[i]);
    kd_zap_stop(&z);
    assert_null(z);
    zmq_ctx_term(ctx);
    kd_curve_unmake(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_directory_means_unauthenticated),
        cmocka_unit_test(test_made_keys_load_and_are_private),
        cmocka_unit_test(test_malformed_key_files_are_refused_naming_the_file),
        cmocka_unit_test(test_zap_admits_only_the_job_key),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
