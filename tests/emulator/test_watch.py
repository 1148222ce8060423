"""Emulator watch semantics: resume from a resourceVersion with no event missed or
duplicated, bookmarks, 410 Expired after the window or expireNow, selectors moving
objects in and out, initial events, timeouts, dropped watches and event latency."""

import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from emulator import Emulator  # noqa: E402

NS = "/api/v1/namespaces/default"


def cm(name, labels=None, value="0"):
    return {"metadata": {"name": name, "labels": labels or {}}, "data": {"v": value}}


class WatchTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.emu = Emulator(rv_window=50, bookmark_interval=0.2).start()

    @classmethod
    def tearDownClass(cls):
        cls.emu.stop()

    def req(self, *a, **kw):
        return self.emu.request(*a, **kw)

    def events(self, w, n, skip_bookmarks=True):
        out = []
        while len(out) < n:
            ev = w.next()
            if ev is None:
                break
            if skip_bookmarks and ev["type"] == "BOOKMARK":
                continue
            out.append(ev)
        return out

    def test_watch_from_resource_version_sees_every_later_change_once(self):
        code, lst = self.req("GET", NS + "/configmaps?labelSelector=w1")
        rv = lst["metadata"]["resourceVersion"]
        self.req("POST", NS + "/configmaps", cm("w1-a", {"w1": "x"}))
        self.req("PATCH", NS + "/configmaps/w1-a", {"data": {"v": "1"}},
                 "application/merge-patch+json")
        self.req("DELETE", NS + "/configmaps/w1-a")
        w = self.emu.watch(NS + "/configmaps?watch=1&labelSelector=w1&resourceVersion=" + rv)
        evs = self.events(w, 3)
        self.assertEqual([e["type"] for e in evs], ["ADDED", "MODIFIED", "DELETED"])
        rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in evs]
        self.assertEqual(rvs, sorted(set(rvs)))
        self.assertGreater(rvs[0], int(rv))
        self.req("POST", NS + "/configmaps", cm("w1-b", {"w1": "x"}))
        ev = self.events(w, 1)[0]
        self.assertEqual((ev["type"], ev["object"]["metadata"]["name"]), ("ADDED", "w1-b"))
        w.close()

    def test_watch_without_version_starts_with_current_state(self):
        self.req("POST", NS + "/configmaps", cm("w2-a", {"w2": "x"}))
        w = self.emu.watch(NS + "/configmaps?watch=true&labelSelector=w2")
        ev = self.events(w, 1)[0]
        self.assertEqual((ev["type"], ev["object"]["metadata"]["name"]), ("ADDED", "w2-a"))
        w.close()

    def test_bookmarks_carry_the_current_version(self):
        w = self.emu.watch(NS + "/configmaps?watch=1&allowWatchBookmarks=true&labelSelector=w3"
                           "&resourceVersion=%d" % self.emu.state()["resourceVersion"])
        t0 = time.monotonic()
        ev = w.next()
        self.assertEqual(ev["type"], "BOOKMARK")
        self.assertLess(time.monotonic() - t0, 2)
        self.assertEqual(ev["object"]["kind"], "ConfigMap")
        self.assertGreaterEqual(int(ev["object"]["metadata"]["resourceVersion"]),
                                self.emu.state()["resourceVersion"] - 50)
        w.close()
        # Without allowWatchBookmarks there are none.
        w = self.emu.watch(NS + "/configmaps?watch=1&labelSelector=w3&timeoutSeconds=1"
                           "&resourceVersion=%d" % self.emu.state()["resourceVersion"])
        self.assertIsNone(w.next(), "no events, stream ends at timeoutSeconds")
        w.close()

    def test_send_initial_events_ends_with_marked_bookmark(self):
        self.req("POST", NS + "/configmaps", cm("w4-a", {"w4": "x"}))
        w = self.emu.watch(NS + "/configmaps?watch=1&labelSelector=w4&sendInitialEvents=true"
                           "&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan")
        ev = w.next()
        self.assertEqual((ev["type"], ev["object"]["metadata"]["name"]), ("ADDED", "w4-a"))
        ev = w.next()
        self.assertEqual(ev["type"], "BOOKMARK")
        self.assertEqual(ev["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
                         "true")
        w.close()

    def test_expired_versions_answer_410(self):
        code, lst = self.req("GET", NS + "/configmaps")
        old = lst["metadata"]["resourceVersion"]
        for i in range(60):  # more than the window of 50
            self.req("POST", NS + "/configmaps", cm("w5-%d" % i))
        w = self.emu.watch(NS + "/configmaps?watch=1&resourceVersion=" + old)
        self.assertEqual(w.status, 200)
        ev = w.next()
        self.assertEqual(ev["type"], "ERROR")
        self.assertEqual((ev["object"]["code"], ev["object"]["reason"]), (410, "Expired"))
        self.assertIsNone(w.next())
        w.close()
        code, body = self.req("GET", NS + "/configmaps?resourceVersion=%s"
                              "&resourceVersionMatch=Exact" % old)
        self.assertEqual((code, body["reason"]), (410, "Expired"))

    def test_expire_now_and_continue_tokens(self):
        for i in range(3):
            self.req("POST", NS + "/configmaps", cm("w6-%d" % i, {"w6": "x"}))
        code, page = self.req("GET", NS + "/configmaps?labelSelector=w6&limit=1")
        rv = page["metadata"]["resourceVersion"]
        self.emu.fault(expireNow=True)
        ev = self.emu.watch(NS + "/configmaps?watch=1&resourceVersion=" + rv).next()
        self.assertEqual(ev["object"]["code"], 410)
        code, body = self.req("GET", NS + "/configmaps?labelSelector=w6&limit=1&continue="
                              + page["metadata"]["continue"])
        self.assertEqual(code, 410)
        # The current version still works.
        cur = self.emu.state()["resourceVersion"]
        w = self.emu.watch(NS + "/configmaps?watch=1&labelSelector=w6&resourceVersion=%d" % cur)
        self.req("POST", NS + "/configmaps", cm("w6-new", {"w6": "x"}))
        self.assertEqual(self.events(w, 1)[0]["object"]["metadata"]["name"], "w6-new")
        w.close()

    def test_selector_changes_become_added_and_deleted(self):
        cur = self.emu.state()["resourceVersion"]
        w = self.emu.watch(NS + "/configmaps?watch=1&labelSelector=w7%%3Din&resourceVersion=%d"
                           % cur)
        self.req("POST", NS + "/configmaps", cm("w7", {"w7": "out"}))
        self.req("PATCH", NS + "/configmaps/w7", {"metadata": {"labels": {"w7": "in"}}},
                 "application/merge-patch+json")
        self.req("PATCH", NS + "/configmaps/w7", {"metadata": {"labels": {"w7": "out"}}},
                 "application/merge-patch+json")
        self.assertEqual([e["type"] for e in self.events(w, 2)], ["ADDED", "DELETED"])
        w.close()

    def test_drop_watches_cuts_streams_and_resume_misses_nothing(self):
        cur = self.emu.state()["resourceVersion"]
        w = self.emu.watch(NS + "/configmaps?watch=1&labelSelector=w8&resourceVersion=%d" % cur)
        self.req("POST", NS + "/configmaps", cm("w8-a", {"w8": "x"}))
        first = self.events(w, 1)[0]
        deadline = time.time() + 5
        while self.emu.state()["watchesOpen"] < 1 and time.time() < deadline:
            time.sleep(0.05)
        self.emu.fault(dropWatches=True)
        with self.assertRaises(Exception):
            while True:
                if w.next() is None:
                    raise EOFError()
        w.close()
        self.req("POST", NS + "/configmaps", cm("w8-b", {"w8": "x"}))
        last = first["object"]["metadata"]["resourceVersion"]
        w = self.emu.watch(NS + "/configmaps?watch=1&labelSelector=w8&resourceVersion=" + last)
        ev = self.events(w, 1)[0]
        self.assertEqual((ev["type"], ev["object"]["metadata"]["name"]), ("ADDED", "w8-b"))
        w.close()

    def test_abandoned_watches_are_released(self):
        before = self.emu.state()["watchers"]
        ws = [self.emu.watch(NS + "/configmaps?watch=1&labelSelector=w10") for _ in range(5)]
        deadline = time.time() + 5
        while self.emu.state()["watchers"] < before + 5 and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.emu.state()["watchers"], before + 5)
        for w in ws:
            w.close()
        deadline = time.time() + 10
        while self.emu.state()["watchers"] > before and time.time() < deadline:
            time.sleep(0.1)
        self.assertEqual(self.emu.state()["watchers"], before)
        self.assertEqual(self.emu.state()["watchesOpen"], before)

    def test_event_latency_is_low(self):
        cur = self.emu.state()["resourceVersion"]
        w = self.emu.watch(NS + "/configmaps?watch=1&labelSelector=w9&resourceVersion=%d" % cur)
        lat = []
        for i in range(20):
            got = []

            def reader():
                got.append(self.events(w, 1)[0])
                got.append(time.monotonic())
            th = threading.Thread(target=reader)
            th.start()
            t0 = time.monotonic()
            code, _ = self.req("POST", NS + "/configmaps", cm("w9-%d" % i, {"w9": "x"}))
            th.join(5)
            lat.append(got[1] - t0)
        lat.sort()
        # Create round trip + delivery; the delivery itself is ~1 ms. Generous bound
        # because the build machine is shared.
        self.assertLess(lat[len(lat) // 2], 0.1, lat)
        w.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
