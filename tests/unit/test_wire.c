/* kd_wire: headers round-trip bit-exactly in little-endian, and every malformed or
 * foreign message is rejected with the right reason instead of being trusted. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "kd_error.h"
#include "kd_wire.h"

static kd_wire_hdr sample_hdr(uint16_t type, uint32_t len)
{
    kd_wire_hdr h = {.type = type, .generation = 7, .sender = 3, .step = 0x0102030405060708ull,
                     .epoch = 9, .aux = 0xa0b0c0d0u, .offset = 123456789012ull,
                     .payload_len = len};
    return h;
}

static int decode2(const unsigned char *hdr, size_t hlen, const void *body, size_t blen,
                   size_t nframes, kd_wire_hdr *out, kd_wire_drop_reason *why)
{
    const void *frames[3] = {hdr, body, body};
    size_t lens[3] = {hlen, blen, blen};
    return kd_wire_decode(frames, lens, nframes, out, why);
}

static void test_header_round_trips_little_endian(void **state)
{
    (void)state;
    unsigned char buf[KD_WIRE_HDR_SIZE];
    kd_wire_hdr h = sample_hdr(KD_WIRE_DATA, 8), d;
    kd_wire_encode(&h, buf);
    /* Magic "KDT1" in byte order, step least significant byte first. */
    assert_memory_equal(buf, "KDT1", 4);
    assert_int_equal(buf[16], 0x08);
    assert_int_equal(buf[23], 0x01);
    float body[2] = {1.0f, 2.0f};
    kd_wire_drop_reason why = KD_WIRE_DROP_COUNT;
    assert_int_equal(decode2(buf, sizeof buf, body, 8, 2, &d, &why), KD_OK);
    assert_int_equal(d.type, KD_WIRE_DATA);
    assert_int_equal(d.generation, 7);
    assert_int_equal(d.sender, 3);
    assert_true(d.step == h.step);
    assert_int_equal(d.epoch, 9);
    assert_int_equal(d.aux, 0xa0b0c0d0u);
    assert_true(d.offset == h.offset);
    assert_int_equal(d.payload_len, 8);
}

static void expect_drop(const unsigned char *hdr, size_t hlen, const void *body, size_t blen,
                        size_t nframes, kd_wire_drop_reason want)
{
    kd_wire_hdr d;
    kd_wire_drop_reason why = KD_WIRE_DROP_COUNT;
    assert_int_equal(decode2(hdr, hlen, body, blen, nframes, &d, &why), KD_EPROTO);
    assert_int_equal(why, want);
}

static void test_foreign_and_malformed_headers_are_rejected(void **state)
{
    (void)state;
    unsigned char buf[KD_WIRE_HDR_SIZE + 4];
    kd_wire_hdr h = sample_hdr(KD_WIRE_HEARTBEAT, 0);
    kd_wire_encode(&h, buf);
    expect_drop(buf, KD_WIRE_HDR_SIZE - 1, NULL, 0, 1, KD_WIRE_DROP_SHORT);
    expect_drop(buf, KD_WIRE_HDR_SIZE + 1, NULL, 0, 1, KD_WIRE_DROP_SHORT);
    expect_drop((const unsigned char *)"GET / HTTP/1.1\r\n", 16, NULL, 0, 1,
                KD_WIRE_DROP_MAGIC);
    expect_drop(buf, KD_WIRE_HDR_SIZE, NULL, 0, 0, KD_WIRE_DROP_FRAMES);

    unsigned char bad[KD_WIRE_HDR_SIZE];
    memcpy(bad, buf, sizeof bad);
    bad[0] ^= 1;
    expect_drop(bad, sizeof bad, NULL, 0, 1, KD_WIRE_DROP_MAGIC);
    memcpy(bad, buf, sizeof bad);
    bad[4] = 2;
    expect_drop(bad, sizeof bad, NULL, 0, 1, KD_WIRE_DROP_VERSION);
    memcpy(bad, buf, sizeof bad);
    bad[6] = 0;
    expect_drop(bad, sizeof bad, NULL, 0, 1, KD_WIRE_DROP_TYPE);
    bad[6] = KD_WIRE_TYPE_MAX + 1;
    expect_drop(bad, sizeof bad, NULL, 0, 1, KD_WIRE_DROP_TYPE);
    memcpy(bad, buf, sizeof bad);
    bad[47] = 1;
    expect_drop(bad, sizeof bad, NULL, 0, 1, KD_WIRE_DROP_RESERVED);
    /* A heartbeat carries no payload: neither an extra frame nor an announced length. */
    expect_drop(buf, KD_WIRE_HDR_SIZE, "x", 1, 2, KD_WIRE_DROP_FRAMES);
    h.payload_len = 4;
    kd_wire_encode(&h, bad);
    expect_drop(bad, sizeof bad, NULL, 0, 1, KD_WIRE_DROP_LENGTH);
    /* Ranks beyond the largest world are out of range. */
    h = sample_hdr(KD_WIRE_HEARTBEAT, 0);
    h.sender = KD_WIRE_MAX_WORLD;
    kd_wire_encode(&h, bad);
    expect_drop(bad, sizeof bad, NULL, 0, 1, KD_WIRE_DROP_FIELD);
}

static void test_payload_lengths_are_checked_per_type(void **state)
{
    (void)state;
    unsigned char buf[KD_WIRE_HDR_SIZE];
    float f[4] = {0};
    kd_wire_hdr h = sample_hdr(KD_WIRE_DATA, 16);
    kd_wire_encode(&h, buf);
    /* Announced 16 bytes but the frame holds 12: truncated in transit or forged. */
    expect_drop(buf, sizeof buf, f, 12, 2, KD_WIRE_DROP_LENGTH);
    expect_drop(buf, sizeof buf, NULL, 0, 1, KD_WIRE_DROP_FRAMES);
    expect_drop(buf, sizeof buf, f, 16, 3, KD_WIRE_DROP_FRAMES);
    h.payload_len = 6; /* not a whole number of floats */
    kd_wire_encode(&h, buf);
    expect_drop(buf, sizeof buf, f, 6, 2, KD_WIRE_DROP_LENGTH);
    h.payload_len = 0;
    kd_wire_encode(&h, buf);
    expect_drop(buf, sizeof buf, f, 0, 2, KD_WIRE_DROP_LENGTH);
    h = sample_hdr(KD_WIRE_JOIN, KD_WIRE_MAX_JSON_BYTES + 1);
    kd_wire_encode(&h, buf);
    expect_drop(buf, sizeof buf, f, KD_WIRE_MAX_JSON_BYTES + 1, 2, KD_WIRE_DROP_LENGTH);
    /* Packed chunks (bfloat16 and float32 elements): any even length, never empty or
     * odd. */
    h = sample_hdr(KD_WIRE_DATA_BF16, 6);
    kd_wire_encode(&h, buf);
    const void *frames[2] = {buf, f};
    size_t lens[2] = {sizeof buf, 6};
    kd_wire_hdr d;
    kd_wire_drop_reason why;
    assert_int_equal(kd_wire_decode(frames, lens, 2, &d, &why), KD_OK);
    assert_int_equal(d.payload_len, 6);
    assert_string_equal(kd_wire_type_name(KD_WIRE_DATA_BF16), "DATA_BF16");
    h.payload_len = 5;
    kd_wire_encode(&h, buf);
    expect_drop(buf, sizeof buf, f, 5, 2, KD_WIRE_DROP_LENGTH);
    h.payload_len = 0;
    kd_wire_encode(&h, buf);
    expect_drop(buf, sizeof buf, f, 0, 2, KD_WIRE_DROP_LENGTH);
}

static void test_json_bodies_must_be_objects_with_fields_in_range(void **state)
{
    (void)state;
    kd_wire_drop_reason why = KD_WIRE_DROP_COUNT;
    assert_null(kd_wire_json("[1,2]", 5, &why));
    assert_int_equal(why, KD_WIRE_DROP_JSON);
    assert_null(kd_wire_json("{\"a\":", 5, &why));
    assert_null(kd_wire_json("{\"a\":1,\"a\":2}", 13, &why));
    const char *text = "{\"rank\":2,\"lr\":0.5,\"name\":\"w1\"}";
    json_t *o = kd_wire_json(text, strlen(text), &why);
    assert_non_null(o);
    long long v = 0;
    double d = 0;
    const char *s = NULL;
    assert_int_equal(kd_wire_get_int(o, "rank", 0, 3, &v), 0);
    assert_int_equal(v, 2);
    assert_int_equal(kd_wire_get_int(o, "rank", 0, 1, &v), -1);
    assert_int_equal(kd_wire_get_int(o, "lr", 0, 1, &v), -1);
    assert_int_equal(kd_wire_get_num(o, "lr", 0, 1, &d), 0);
    assert_true(d == 0.5);
    assert_int_equal(kd_wire_get_num(o, "missing", 0, 1, &d), -1);
    assert_int_equal(kd_wire_get_str(o, "name", 8, &s), 0);
    assert_string_equal(s, "w1");
    assert_int_equal(kd_wire_get_str(o, "name", 1, &s), -1);
    json_decref(o);
}

static void test_drops_are_counted_per_reason(void **state)
{
    (void)state;
    uint64_t before = kd_wire_drops(KD_WIRE_DROP_MAGIC);
    uint64_t total = kd_wire_drops(KD_WIRE_DROP_COUNT);
    for (int i = 0; i < 1000; i++)
        kd_wire_drop(KD_WIRE_DROP_MAGIC, "test");
    kd_wire_drop(KD_WIRE_DROP_STALE, "test");
    assert_int_equal(kd_wire_drops(KD_WIRE_DROP_MAGIC) - before, 1000);
    assert_int_equal(kd_wire_drops(KD_WIRE_DROP_COUNT) - total, 1001);
    assert_string_equal(kd_wire_type_name(KD_WIRE_WORLD), "WORLD");
    assert_string_equal(kd_wire_type_name(99), "unknown");
}

static void test_floats_convert_to_little_endian(void **state)
{
    (void)state;
    float src[2] = {1.0f, -2.5f}, back[2];
    unsigned char le[8];
    kd_wire_floats_to_le(le, src, 2);
    assert_int_equal(le[3], 0x3f); /* 1.0f = 0x3f800000, most significant byte last */
    assert_int_equal(le[2], 0x80);
    kd_wire_floats_from_le(back, le, 2);
    assert_memory_equal(back, src, sizeof src);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_round_trips_little_endian),
        cmocka_unit_test(test_foreign_and_malformed_headers_are_rejected),
        cmocka_unit_test(test_payload_lengths_are_checked_per_type),
        cmocka_unit_test(test_json_bodies_must_be_objects_with_fields_in_range),
        cmocka_unit_test(test_drops_are_counted_per_reason),
        cmocka_unit_test(test_floats_convert_to_little_endian),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
