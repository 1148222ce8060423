/* kd_cli: the command-line convention every kadet binary shares (common/kd_cli.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "kd_cli.h"
#include "kd_error.h"

static const char *const *fake_env;

static const char *fake_getenv(const char *name)
{
    for (size_t i = 0; fake_env != NULL && fake_env[i] != NULL; i += 2)
        if (strcmp(fake_env[i], name) == 0)
            return fake_env[i + 1];
    return NULL;
}

/* What one parse sets. */
typedef struct values {
    long long agents;
    double rate;
    const char *data;
    int quiet;
    int mode; /* set by set_mode: 1 fast, 2 slow */
} values;

static int set_mode(void *target, const char *value, char *err, size_t n)
{
    values *v = target;
    if (strcmp(value, "fast") == 0 || strcmp(value, "slow") == 0) {
        v->mode = value[0] == 'f' ? 1 : 2;
        return KD_OK;
    }
    return kd_errf(err, n, KD_EINVAL, "'%s' is not fast or slow", value);
}

static values v;
static kd_cli_opt opts[5];
static kd_cli cli;

static int setup(void **state)
{
    (void)state;
    memset(&v, 0, sizeof v);
    kd_cli_opt o[5] = {
        {.name = "agents", .env = "T_AGENTS", .type = KD_CLI_INT, .target = &v.agents,
         .lo = 1, .hi = 64, .help = "agents", .metavar = "N"},
        {.name = "rate", .type = KD_CLI_DBL, .target = &v.rate, .lo = 0, .hi = 1,
         .help = "a rate"},
        {.name = "data", .env = "T_DATA", .type = KD_CLI_STR, .target = &v.data,
         .help = "dataset", .metavar = "DIR", .def = "/data"},
        {.name = "quiet", .env = "T_QUIET", .type = KD_CLI_FLAG, .target = &v.quiet,
         .help = "less output"},
        {.name = "mode", .type = KD_CLI_FUNC, .target = &v, .set = set_mode, .help = "mode",
         .metavar = "fast|slow"},
    };
    memcpy(opts, o, sizeof o);
    cli = (kd_cli){.prog = "prog", .args = "FILE", .summary = "Does things.", .opts = opts,
                   .n_opts = 5, .footer = "footer text\n", .getenv_fn = fake_getenv};
    fake_env = NULL;
    return 0;
}

/* Parses args (without program name); returns the kd_err, the message in err. */
static int parse(const char *const *args, kd_cli_action *action, int *first, char **argv,
                 int *argc, char *err, size_t n)
{
    *argc = 0;
    argv[(*argc)++] = (char *)"prog";
    for (size_t i = 0; args[i] != NULL; i++)
        argv[(*argc)++] = (char *)args[i];
    argv[*argc] = NULL;
    return kd_cli_parse(&cli, *argc, argv, action, first, err, n);
}

static void expect_error(const char *const *args, const char *want)
{
    char *argv[16], err[512] = "";
    int argc, first;
    kd_cli_action action;
    int rc = parse(args, &action, &first, argv, &argc, err, sizeof err);
    if (rc == KD_OK)
        fail_msg("accepted; expected an error containing \"%s\"", want);
    if (strstr(err, want) == NULL)
        fail_msg("error \"%s\" does not contain \"%s\"", err, want);
}

static void test_both_value_spellings_and_positional_arguments(void **state)
{
    (void)state;
    const char *args[] = {"FILE.yaml", "--agents=3", "--rate", "0.5", "--data", "/d",
                          "--mode=slow", "--quiet", NULL};
    char *argv[16], err[256];
    int argc, first;
    kd_cli_action action;
    assert_int_equal(parse(args, &action, &first, argv, &argc, err, sizeof err), KD_OK);
    assert_int_equal(action, KD_CLI_RUN);
    assert_int_equal(v.agents, 3);
    assert_true(v.rate == 0.5);
    assert_string_equal(v.data, "/d");
    assert_int_equal(v.quiet, 1);
    assert_int_equal(v.mode, 2);
    assert_int_equal(first, argc - 1); /* the positional argument moved after the options */
    assert_string_equal(argv[first], "FILE.yaml");
    const char *off[] = {"--quiet=false", NULL};
    assert_int_equal(parse(off, &action, &first, argv, &argc, err, sizeof err), KD_OK);
    assert_int_equal(v.quiet, 0);
    assert_int_equal(first, argc);
}

static void test_environment_applies_and_flags_win(void **state)
{
    (void)state;
    const char *env[] = {"T_AGENTS", "5", "T_DATA", "", "T_QUIET", "yes", NULL};
    fake_env = env;
    const char *none[] = {NULL};
    char *argv[16], err[256];
    int argc, first;
    kd_cli_action action;
    assert_int_equal(parse(none, &action, &first, argv, &argc, err, sizeof err), KD_OK);
    assert_int_equal(v.agents, 5);
    assert_null(v.data); /* empty means unset */
    assert_int_equal(v.quiet, 1);
    const char *flag[] = {"--agents", "7", NULL};
    assert_int_equal(parse(flag, &action, &first, argv, &argc, err, sizeof err), KD_OK);
    assert_int_equal(v.agents, 7);
    /* A bad variable is an error even when a flag overrides it. */
    const char *bad[] = {"T_AGENTS", "lots", NULL};
    fake_env = bad;
    expect_error(flag, "environment T_AGENTS: expected an integer in 1..64, got \"lots\"");
}

static void test_errors_name_the_option_and_the_range(void **state)
{
    (void)state;
    const char *word[] = {"--agents", "two", NULL};
    expect_error(word, "--agents: expected an integer in 1..64, got \"two\"");
    const char *big[] = {"--agents=65", NULL};
    expect_error(big, "--agents: 65 is outside 1..64");
    const char *rate[] = {"--rate", "2", NULL};
    expect_error(rate, "--rate: 2 is outside 0..1");
    const char *nan[] = {"--rate", "nan", NULL};
    expect_error(nan, "--rate: expected a number in 0..1");
    const char *missing[] = {"--agents", NULL};
    expect_error(missing, "--agents needs a value (N)");
    const char *func[] = {"--mode", "medium", NULL};
    expect_error(func, "--mode: 'medium' is not fast or slow");
    const char *boolean[] = {"--quiet=maybe", NULL};
    expect_error(boolean, "--quiet: expected true or false, got \"maybe\"");
    const char *help_value[] = {"--help=yes", NULL};
    expect_error(help_value, "--help takes no value");
}

static void test_unknown_options_get_a_suggestion(void **state)
{
    (void)state;
    const char *swapped[] = {"--agnets", "2", NULL};
    expect_error(swapped, "unknown option '--agnets' (did you mean --agents?)");
    const char *typo[] = {"--qiet", NULL};
    expect_error(typo, "(did you mean --quiet?)");
    const char *far[] = {"--frobnicate", NULL};
    char *argv[16], err[256];
    int argc, first;
    kd_cli_action action;
    assert_int_equal(parse(far, &action, &first, argv, &argc, err, sizeof err), KD_EINVAL);
    assert_string_equal(err, "unknown option '--frobnicate'");
    const char *shortopt[] = {"-x", NULL};
    expect_error(shortopt, "unknown option '-x'");
}

static void test_help_and_version_stop_parsing(void **state)
{
    (void)state;
    char *argv[16], err[256];
    int argc, first;
    kd_cli_action action;
    const char *h[] = {"--agents", "2", "-h", "--bogus", NULL};
    assert_int_equal(parse(h, &action, &first, argv, &argc, err, sizeof err), KD_OK);
    assert_int_equal(action, KD_CLI_HELP);
    const char *help[] = {"--help", NULL};
    assert_int_equal(parse(help, &action, &first, argv, &argc, err, sizeof err), KD_OK);
    assert_int_equal(action, KD_CLI_HELP);
    const char *version[] = {"--version", NULL};
    assert_int_equal(parse(version, &action, &first, argv, &argc, err, sizeof err), KD_OK);
    assert_int_equal(action, KD_CLI_VERSION);
}

static void test_usage_names_metavariables_ranges_defaults_and_variables(void **state)
{
    (void)state;
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    assert_non_null(out);
    kd_cli_usage(&cli, out);
    fclose(out);
    const char *want[] = {"usage: prog [options] FILE", "Does things.", "-h, --help",
                          "--version", "--agents N", "(1..64)", "[T_AGENTS]", "--rate NUM",
                          "(0..1)", "--data DIR", "(default /data)", "--quiet ",
                          "--mode fast|slow", "footer text"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (strstr(text, want[i]) == NULL)
            fail_msg("usage lacks \"%s\":\n%s", want[i], text);
    assert_null(strstr(text, " V "));
    free(text);
}

static void test_nearest(void **state)
{
    (void)state;
    const char *const names[] = {"training", "agents", "scheduling", "runPolicy"};
    assert_string_equal(kd_cli_nearest("trainig", names, 4), "training");
    assert_string_equal(kd_cli_nearest("agnets", names, 4), "agents");
    assert_string_equal(kd_cli_nearest("runpolicy", names, 4), "runPolicy");
    assert_string_equal(kd_cli_nearest("sched", names, 4), "scheduling");
    assert_null(kd_cli_nearest("zzz", names, 4));
    assert_null(kd_cli_nearest("", names, 4));
    assert_null(kd_cli_nearest(NULL, names, 4));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_both_value_spellings_and_positional_arguments, setup),
        cmocka_unit_test_setup(test_environment_applies_and_flags_win, setup),
        cmocka_unit_test_setup(test_errors_name_the_option_and_the_range, setup),
        cmocka_unit_test_setup(test_unknown_options_get_a_suggestion, setup),
        cmocka_unit_test_setup(test_help_and_version_stop_parsing, setup),
        cmocka_unit_test_setup(test_usage_names_metavariables_ranges_defaults_and_variables,
                               setup),
        cmocka_unit_test_setup(test_nearest, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
