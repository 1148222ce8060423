/*
 * kd_hosts: resolves the host part of a ZeroMQ tcp endpoint through a hosts-format file
 * named by the environment variable KADET_HOSTS, before ZeroMQ's own resolver sees it.
 *
 * Why: the Kubernetes API emulator's fake kubelet runs pods as local processes without
 * cluster DNS; it writes the Service names of each namespace to a hosts file and passes
 * its path in KADET_HOSTS (docs/emulator.md, "Service names"). In a real cluster the
 * variable is unset and names go to getaddrinfo (cluster DNS) unchanged.
 *
 * The file is re-read on every call (it is replaced atomically whenever a Service moves
 * to another pod), so a reconnect after a coordinator restart finds the new address.
 */
#ifndef KD_HOSTS_H
#define KD_HOSTS_H

#include <stddef.h>

/* Rewrites "tcp://NAME:PORT" into "tcp://IP:PORT" when KADET_HOSTS is set and names a
 * readable file that maps NAME; otherwise copies endpoint_in unchanged (an IP, "*",
 * another transport, a name the file does not know). Returns KD_OK, KD_EINVAL for NULL
 * arguments, or KD_ETOOBIG when the result does not fit in outlen bytes (out is then ""). */
int kd_resolve_endpoint(const char *endpoint_in, char *out, size_t outlen);

/* Like kd_resolve_endpoint, but when KADET_HOSTS is set and does not map the name yet,
 * re-reads it every 100 ms for up to timeout_ms: a pod may start before the Service's
 * pod is Running and the kubelet has written its name (a name ZeroMQ cannot resolve is
 * retried by it forever). Returns KD_OK with the mapped endpoint, KD_ETIMEOUT with the
 * endpoint unchanged in out when the name never appeared, or the kd_resolve_endpoint
 * errors. Without KADET_HOSTS it returns at once. */
int kd_resolve_endpoint_wait(const char *endpoint_in, char *out, size_t outlen,
                             long timeout_ms);

/* The same with an explicit hosts file (NULL = no file): the testable core. */
int kd_resolve_endpoint_file(const char *endpoint_in, const char *hosts_path, char *out,
                             size_t outlen);

/* Looks NAME up in a hosts-format file: "IP name [alias...]" lines, '#' comments, first
 * match wins, names compared case-insensitively. Returns KD_OK with the address in ip,
 * KD_ENOTFOUND when absent, KD_EIO when the file cannot be read. */
int kd_hosts_lookup(const char *hosts_path, const char *name, char *ip, size_t iplen);

#endif
