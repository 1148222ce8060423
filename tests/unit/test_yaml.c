/* kd_yaml: YAML documents become the JSON trees the decoders expect, and bad YAML gives
 * an error with a position instead of a crash. */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "kd_error.h"
#include "kd_yaml.h"

static json_t *parse_one(const char *text)
{
    json_t *docs = NULL;
    char err[256] = "";
    assert_int_equal(kd_yaml_parse(text, strlen(text), &docs, err, sizeof err), KD_OK);
    assert_int_equal(json_array_size(docs), 1);
    json_t *doc = json_incref(json_array_get(docs, 0));
    json_decref(docs);
    return doc;
}

static void test_plain_scalars_are_typed_and_quoted_ones_are_strings(void **state)
{
    (void)state;
    json_t *d = parse_one("a: 1\nb: 2.5\nc: true\nd: ~\ne: \"7\"\nf: abc\ng: -3\nh: 1e-3\n");
    assert_true(json_is_integer(json_object_get(d, "a")));
    assert_int_equal(json_integer_value(json_object_get(d, "a")), 1);
    assert_true(json_is_real(json_object_get(d, "b")));
    assert_true(json_is_true(json_object_get(d, "c")));
    assert_true(json_is_null(json_object_get(d, "d")));
    assert_string_equal(json_string_value(json_object_get(d, "e")), "7");
    assert_string_equal(json_string_value(json_object_get(d, "f")), "abc");
    assert_int_equal(json_integer_value(json_object_get(d, "g")), -3);
    assert_true(json_real_value(json_object_get(d, "h")) > 0.0009);
    json_decref(d);
}

static void test_nested_flow_and_block_collections(void **state)
{
    (void)state;
    json_t *d = parse_one("spec:\n  agents: {min: 1, max: 4}\n  hidden: [256, 128]\n"
                          "  list:\n    - name: x\n    - name: y\n");
    json_t *spec = json_object_get(d, "spec");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(spec, "agents"), "max")), 4);
    assert_int_equal(json_array_size(json_object_get(spec, "hidden")), 2);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(json_object_get(spec, "list"), 1), "name")),
        "y");
    json_decref(d);
}

static void test_multiple_documents_and_anchors(void **state)
{
    (void)state;
    const char *text = "a: &x {k: 1}\nb: *x\n---\n---\nc: 2\n";
    json_t *docs = NULL;
    char err[256];
    assert_int_equal(kd_yaml_parse(text, strlen(text), &docs, err, sizeof err), KD_OK);
    assert_int_equal(json_array_size(docs), 2);
    json_t *b = json_object_get(json_array_get(docs, 0), "b");
    assert_int_equal(json_integer_value(json_object_get(b, "k")), 1);
    json_decref(docs);
}

static void test_malformed_yaml_reports_line(void **state)
{
    (void)state;
    const char *bad[] = {"a: [1, 2\n", "a: b: c\n", "? [1]\n: x\n", "a: *nope\n", "\t- x: y\n  - z"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *docs = (json_t *)1;
        char err[256] = "";
        int rc = kd_yaml_parse(bad[i], strlen(bad[i]), &docs, err, sizeof err);
        assert_int_not_equal(rc, KD_OK);
        assert_null(docs);
        assert_non_null(strstr(err, "line"));
    }
}

static void test_deep_nesting_is_refused(void **state)
{
    (void)state;
    char text[1200];
    memset(text, '[', 1000);
    text[1000] = '\0';
    json_t *docs = NULL;
    char err[256] = "";
    assert_int_not_equal(kd_yaml_parse(text, strlen(text), &docs, err, sizeof err), KD_OK);
    assert_null(docs);
}

static void test_missing_file_names_the_file(void **state)
{
    (void)state;
    json_t *docs = NULL;
    char err[256] = "";
    assert_int_equal(kd_yaml_load_file("/nonexistent/x.yaml", 0, &docs, err, sizeof err),
                     KD_ENOTFOUND);
    assert_non_null(strstr(err, "/nonexistent/x.yaml"));
}

/* The "billion laughs" document: each level refers to the one before ten times. */
static char *alias_bomb(int levels)
{
    size_t cap = 64 + (size_t)levels * 128;
    char *t = malloc(cap);
    assert_non_null(t);
    size_t n = (size_t)snprintf(t, cap, "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for (int i = 1; i < levels; i++)
        n += (size_t)snprintf(t + n, cap - n,
                              "a%d: &a%d [*a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d]\n",
                              i, i, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1,
                              i - 1, i - 1);
    return t;
}

static long max_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static void test_alias_bomb_is_refused_before_it_grows(void **state)
{
    (void)state;
    char *text = alias_bomb(9); /* 10^9 scalars if expanded */
    long before = max_rss_kb();
    json_t *docs = (json_t *)1;
    char err[256] = "";
    assert_int_equal(kd_yaml_parse(text, strlen(text), &docs, err, sizeof err), KD_ETOOBIG);
    assert_null(docs);
    assert_non_null(strstr(err, "nodes"));
    assert_non_null(strstr(err, "line"));
    /* Refused at the count, before copying: the process grew by far less than 50 MB. */
    assert_true(max_rss_kb() - before < 50 * 1024);
    free(text);
    /* A modest use of aliases still works. */
    text = alias_bomb(3);
    docs = NULL;
    assert_int_equal(kd_yaml_parse(text, strlen(text), &docs, err, sizeof err), KD_OK);
    json_t *a2 = json_object_get(json_array_get(docs, 0), "a2");
    assert_int_equal(json_array_size(json_array_get(json_array_get(a2, 9), 9)), 10);
    json_decref(docs);
    free(text);
}

static void test_alias_count_and_alias_depth_are_bounded(void **state)
{
    (void)state;
    /* 12,000 aliases of a scalar: small, but more than any real manifest uses. */
    size_t cap = 16 + 12000 * 5;
    char *t = malloc(cap);
    assert_non_null(t);
    size_t n = (size_t)snprintf(t, cap, "- &s x\n");
    for (int i = 0; i < 12000; i++)
        n += (size_t)snprintf(t + n, cap - n, "- *s\n");
    json_t *docs = NULL;
    char err[256] = "";
    assert_int_equal(kd_yaml_parse(t, n, &docs, err, sizeof err), KD_ETOOBIG);
    assert_non_null(strstr(err, "aliases"));
    free(t);
    /* An anchor 100 levels deep placed 100 levels deep: 200 levels through the alias. */
    char deep[1024];
    n = 0;
    n += (size_t)snprintf(deep + n, sizeof deep - n, "a: &d ");
    for (int i = 0; i < 100; i++)
        deep[n++] = '[';
    for (int i = 0; i < 100; i++)
        deep[n++] = ']';
    deep[n++] = '\n';
    n += (size_t)snprintf(deep + n, sizeof deep - n, "b: ");
    for (int i = 0; i < 100; i++)
        deep[n++] = '[';
    n += (size_t)snprintf(deep + n, sizeof deep - n, "*d ");
    for (int i = 0; i < 100; i++)
        deep[n++] = ']';
    deep[n] = '\0';
    assert_int_equal(kd_yaml_parse(deep, n, &docs, err, sizeof err), KD_ETOOBIG);
    assert_non_null(strstr(err, "deeper"));
}

static void test_duplicate_keys_are_refused_naming_the_key(void **state)
{
    (void)state;
    const char *bad[] = {"a: 1\nb: 2\na: 3\n", "spec:\n  replicas: 1\n  replicas: 2\n",
                         "{x: 1, \"x\": 2}\n"};
    const char *key[] = {"\"a\"", "\"replicas\"", "\"x\""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *docs = (json_t *)1;
        char err[256] = "";
        assert_int_equal(kd_yaml_parse(bad[i], strlen(bad[i]), &docs, err, sizeof err),
                         KD_EPARSE);
        assert_null(docs);
        assert_non_null(strstr(err, "duplicate mapping key"));
        assert_non_null(strstr(err, key[i]));
    }
    /* The same key in sibling mappings and in separate documents is fine. */
    const char *ok = "a: {k: 1}\nb: {k: 2}\n---\na: 2\n";
    json_t *docs = NULL;
    char err[256] = "";
    assert_int_equal(kd_yaml_parse(ok, strlen(ok), &docs, err, sizeof err), KD_OK);
    assert_int_equal(json_array_size(docs), 2);
    json_decref(docs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_scalars_are_typed_and_quoted_ones_are_strings),
        cmocka_unit_test(test_nested_flow_and_block_collections),
        cmocka_unit_test(test_multiple_documents_and_anchors),
        cmocka_unit_test(test_malformed_yaml_reports_line),
        cmocka_unit_test(test_deep_nesting_is_refused),
        cmocka_unit_test(test_missing_file_names_the_file),
        cmocka_unit_test(test_alias_bomb_is_refused_before_it_grows),
        cmocka_unit_test(test_alias_count_and_alias_depth_are_bounded),
        cmocka_unit_test(test_duplicate_keys_are_refused_naming_the_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
