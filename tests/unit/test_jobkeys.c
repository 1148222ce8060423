/* jobkeys: CURVE keypairs the operator makes. A derived job key is a function of the
 * operator's key and the job's uid only (the same after a restart or a deleted Secret),
 * differs between jobs and operators, and is a real CURVE keypair (its public key is the
 * one libzmq computes, and the two ends complete a CURVE handshake); bad input is an
 * error, not a key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>
#include <zmq.h>

#include "jobkeys.h"
#include "kd_error.h"

static void test_generated_keys_are_z85_pairs(void **state)
{
    (void)state;
    jobkeys_pair a, b;
    char err[256];
    assert_int_equal(jobkeys_generate(&a, err, sizeof err), KD_OK);
    assert_int_equal(jobkeys_generate(&b, err, sizeof err), KD_OK);
    assert_true(jobkeys_valid(a.pub) && jobkeys_valid(a.sec));
    assert_string_not_equal(a.sec, b.sec);
    char pub[41];
    assert_int_equal(zmq_curve_public(pub, a.sec), 0);
    assert_string_equal(pub, a.pub);
    assert_false(jobkeys_valid("short"));
    assert_false(jobkeys_valid("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf\""));
    assert_false(jobkeys_valid(NULL));
}

static void test_derived_job_keys_are_stable_and_distinct(void **state)
{
    (void)state;
    jobkeys_pair op, op2, k1, k1again, k2, k3;
    char err[256];
    assert_int_equal(jobkeys_generate(&op, err, sizeof err), KD_OK);
    assert_int_equal(jobkeys_generate(&op2, err, sizeof err), KD_OK);
    assert_int_equal(jobkeys_derive(&op, "uid-1", &k1, err, sizeof err), KD_OK);
    assert_int_equal(jobkeys_derive(&op, "uid-1", &k1again, err, sizeof err), KD_OK);
    assert_int_equal(jobkeys_derive(&op, "uid-2", &k2, err, sizeof err), KD_OK);
    assert_int_equal(jobkeys_derive(&op2, "uid-1", &k3, err, sizeof err), KD_OK);
    assert_string_equal(k1.sec, k1again.sec);
    assert_string_equal(k1.pub, k1again.pub);
    assert_string_not_equal(k1.sec, k2.sec);
    assert_string_not_equal(k1.sec, k3.sec);
    assert_string_not_equal(k1.sec, op.sec);
    char pub[41];
    assert_int_equal(zmq_curve_public(pub, k1.sec), 0);
    assert_string_equal(pub, k1.pub);
    /* Bad input: an error, and no key. */
    jobkeys_pair bad = op;
    bad.sec[0] = '\0';
    assert_int_equal(jobkeys_derive(&bad, "uid-1", &k2, err, sizeof err), KD_EINVAL);
    assert_string_equal(k2.pub, "");
    assert_int_equal(jobkeys_derive(&op, "", &k2, err, sizeof err), KD_EINVAL);
    assert_non_null(strstr(err, "uid"));
}

/* Sends "hi" from a CURVE client presenting the job key to a server holding `server`
 * and expecting `server_pub`; returns what the server received (-1: nothing in 1 s). */
static int handshake(const jobkeys_pair *server, const char *server_pub,
                     const jobkeys_pair *client)
{
    void *ctx = zmq_ctx_new();
    void *srv = zmq_socket(ctx, ZMQ_PAIR), *cli = zmq_socket(ctx, ZMQ_PAIR);
    int one = 1, ms = 1000, zero = 0;
    assert_int_equal(zmq_setsockopt(srv, ZMQ_CURVE_SERVER, &one, sizeof one), 0);
    assert_int_equal(zmq_setsockopt(srv, ZMQ_CURVE_SECRETKEY, server->sec, 40), 0);
    assert_int_equal(zmq_setsockopt(cli, ZMQ_CURVE_SERVERKEY, server_pub, 40), 0);
    assert_int_equal(zmq_setsockopt(cli, ZMQ_CURVE_PUBLICKEY, client->pub, 40), 0);
    assert_int_equal(zmq_setsockopt(cli, ZMQ_CURVE_SECRETKEY, client->sec, 40), 0);
    zmq_setsockopt(srv, ZMQ_RCVTIMEO, &ms, sizeof ms);
    zmq_setsockopt(cli, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zmq_bind(srv, "tcp://127.0.0.1:*"), 0);
    char ep[128];
    size_t eplen = sizeof ep;
    assert_int_equal(zmq_getsockopt(srv, ZMQ_LAST_ENDPOINT, ep, &eplen), 0);
    assert_int_equal(zmq_connect(cli, ep), 0);
    zmq_send(cli, "hi", 2, ZMQ_DONTWAIT);
    char buf[8];
    int n = zmq_recv(srv, buf, sizeof buf, 0);
    zmq_close(cli);
    zmq_close(srv);
    zmq_ctx_term(ctx);
    return n;
}

/* The derived pair works as the job key over TCP (the runtime uses it as both server and
 * client key); a client that expects another job's server key gets nothing through. */
static void test_derived_key_completes_a_curve_handshake(void **state)
{
    (void)state;
    jobkeys_pair op, job, other;
    char err[256];
    assert_int_equal(jobkeys_generate(&op, err, sizeof err), KD_OK);
    assert_int_equal(jobkeys_derive(&op, "uid-h", &job, err, sizeof err), KD_OK);
    assert_int_equal(jobkeys_derive(&op, "uid-other", &other, err, sizeof err), KD_OK);
    assert_int_equal(handshake(&job, job.pub, &job), 2);
    assert_int_equal(handshake(&job, other.pub, &job), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generated_keys_are_z85_pairs),
        cmocka_unit_test(test_derived_job_keys_are_stable_and_distinct),
        cmocka_unit_test(test_derived_key_completes_a_curve_handshake),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
