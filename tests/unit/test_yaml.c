/* kd_yaml: YAML documents become the JSON trees the decoders expect, and bad YAML gives
 * an error with a position instead of a crash. */
#include <setjmp.h>
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_scalars_are_typed_and_quoted_ones_are_strings),
        cmocka_unit_test(test_nested_flow_and_block_collections),
        cmocka_unit_test(test_multiple_documents_and_anchors),
        cmocka_unit_test(test_malformed_yaml_reports_line),
        cmocka_unit_test(test_deep_nesting_is_refused),
        cmocka_unit_test(test_missing_file_names_the_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
