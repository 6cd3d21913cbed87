"""What kubectl prints when entourage refuses a Pod or warns about it."""


BAD = """apiVersion: v1
kind: Pod
metadata:
  name: bad
  annotations:
    entourage.dev/sidecar-logs: logs/app.log
spec:
  containers:
    - name: app
      image: nginx:1.22
"""

TYPO = BAD.replace("name: bad", "name: typo").replace("entourage.dev/sidecar-logs: logs/app.log",
                                                       "entourage.dev/sidecar-log: /var/log/app.log")


def test_bad_annotation_value_is_refused_with_the_annotation_the_value_and_the_rule(ns):
    proc = ns.kubectl("apply", "-f", "-", input=BAD, check=False)
    assert proc.returncode != 0
    err = proc.stderr
    assert 'admission webhook "pods.entourage.dev" denied the request' in err, err
    assert 'entourage.dev/sidecar-logs: "logs/app.log" is not an absolute path' in err, err
    assert ns.kubectl("get", "pod", "bad", check=False).returncode != 0


def test_unknown_entourage_key_gives_kubectls_warning_line(ns):
    proc = ns.kubectl("apply", "-f", "-", input=TYPO)
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("Warning:")]
    assert any("entourage.dev/sidecar-log is ignored; did you mean entourage.dev/sidecar-logs?" in w
               for w in warnings), proc.stderr
