"""A holder process built on ElasticEndpoint, for tests: it lets the nodes named on its
command line go as soon as it is asked, keeps the others to the end, and prints one JSON
line per hook call (flushed), so a test can follow it from the outside.

    python elastic_holder.py SERVER EVENTS USER SINCE_SEQ [NODE_TO_LET_GO...]
"""

import json
import sys
import time

from atsclient.events import ElasticEndpoint


class Holder(ElasticEndpoint):
    def __init__(self, *args, let_go=(), **kw):
        super().__init__(*args, **kw)
        self.let_go = set(let_go)

    def _print(self, hook, nodelist):
        print(json.dumps({"hook": hook, "t": time.time(), "nodelist": nodelist}), flush=True)

    def on_delete_pending(self, nodelist):
        self._print("delete_pending", nodelist)
        return [n["node_id"] for n in nodelist if n["node_id"] in self.let_go]

    def on_delete_complete(self, nodelist):
        self._print("delete_complete", nodelist)

    def on_resource_values(self, nodelist):
        self._print("resource_values", nodelist)


if __name__ == "__main__":
    server, events, user, since = sys.argv[1:5]
    Holder(server, events, user, since_seq=int(since), let_go=sys.argv[5:],
           idle_check_s=0.2).run()
