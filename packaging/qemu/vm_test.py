#!/usr/bin/env python3
"""The Debian package under systemd in a Debian guest (QEMU, TCG), driven from the host.

The host runs the real `latchkey-server`; the guest (packaging/qemu/build-image.sh) reaches it
only through loopback-only user networking (`restrict=on`, one `guestfwd`). The driver talks to
the guest through qemu-guest-agent on a virtio-serial port: every guest command below runs as
root in the guest, outside the agent, the way an operator's shell would.

Steps (each one asserts what it claims):
  install   `apt-get install ./latchkey_*.deb`: enabled, not started, state dir 0700, conffile
  enroll    token on stdin; `systemctl start` returns once the agent is ready (Type=notify)
  reset     the host resets `kiosk`'s password: PAM (pamtester) takes the new one, refuses the
            old, /etc/shadow stays root:shadow 0640 with a shadow- backup
  lock      the lock command runs once
  kill      SIGKILL mid-lock: systemd restarts the agent, one result, the lock not run again
  watchdog  SIGSTOP: WatchdogSec fires, systemd restarts the agent, commands flow again
  reboot    a command queued while the guest reboots is applied and reported after boot
  stop      `systemctl stop` with a lock in flight: it finishes and is reported before exit
  journal   priorities reach journald (`-p warning`), no secret in any log
  remove    `dpkg -r` keeps the enrollment, `dpkg --purge` deletes it

Prints JSON lines with the timings; exits non-zero on the first failed step.
"""
import argparse
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

LOCKS = "/var/lib/latchkey/test-locks"
GUEST_SERVER = "10.0.2.100"


class StepFailed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise StepFailed(message)


def wait_for(what, timeout, probe, interval=0.2):
    """Polls `probe` until it returns a true value; returns that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise StepFailed(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class GuestAgent:
    """qemu-guest-agent over the virtio-serial chardev socket."""

    def __init__(self, path):
        self.path = path
        self.sock = None
        self.file = None

    def close(self):
        if self.sock:
            self.sock.close()
        self.sock = self.file = None

    def _send(self, message):
        self.file.write(json.dumps(message).encode() + b"\n")
        self.file.flush()

    def _read(self):
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("guest agent closed the channel")
            line = line.lstrip(b"\xff").strip()
            if line:
                return json.loads(line)

    def connect(self, timeout):
        """Connects and synchronises (guest-sync-delimited), retrying until the agent answers."""
        deadline = time.monotonic() + timeout
        while True:
            self.close()
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.settimeout(3)
                self.sock.connect(self.path)
                self.file = self.sock.makefile("rwb")
                token = int(time.time() * 1000) % 1_000_000_007
                self.file.write(b"\xff")
                self._send({"execute": "guest-sync-delimited", "arguments": {"id": token}})
                while True:
                    reply = self._read()
                    if reply.get("return") == token:
                        self.sock.settimeout(30)
                        return
            except (OSError, ConnectionError, ValueError):
                if time.monotonic() > deadline:
                    raise StepFailed(f"the guest agent did not answer within {timeout}s")
                time.sleep(0.5)

    def call(self, command, arguments=None):
        message = {"execute": command}
        if arguments is not None:
            message["arguments"] = arguments
        self._send(message)
        reply = self._read()
        if "error" in reply:
            raise StepFailed(f"{command}: {reply['error']}")
        return reply["return"]

    def run(self, argv, stdin=None, timeout=120):
        """Runs argv in the guest; returns (exit code, stdout, stderr)."""
        arguments = {"path": argv[0], "arg": argv[1:], "capture-output": True}
        if stdin is not None:
            arguments["input-data"] = base64.b64encode(stdin.encode()).decode()
        pid = self.call("guest-exec", arguments)["pid"]
        deadline = time.monotonic() + timeout
        while True:
            status = self.call("guest-exec-status", {"pid": pid})
            if status["exited"]:
                out = base64.b64decode(status.get("out-data", "")).decode(errors="replace")
                err = base64.b64decode(status.get("err-data", "")).decode(errors="replace")
                return status.get("exitcode", -1), out, err
            if time.monotonic() > deadline:
                raise StepFailed(f"guest command {argv} still running after {timeout}s")
            time.sleep(0.1)

    def sh(self, script, stdin=None, timeout=120):
        return self.run(["/bin/sh", "-c", script], stdin=stdin, timeout=timeout)

    def ok(self, script, stdin=None, timeout=120):
        code, out, err = self.sh(script, stdin=stdin, timeout=timeout)
        check(code == 0, f"guest: `{script}` exited {code}: {out}{err}")
        return out

    def write(self, path, data, mode=0o644):
        """Writes a file in the guest through guest-file-* (1 MiB chunks)."""
        handle = self.call("guest-file-open", {"path": path, "mode": "wb"})
        try:
            for start in range(0, len(data), 1 << 20):
                chunk = base64.b64encode(data[start:start + (1 << 20)]).decode()
                self.call("guest-file-write", {"handle": handle, "buf-b64": chunk})
        finally:
            self.call("guest-file-close", {"handle": handle})
        self.ok(f"chmod {mode:o} '{path}'")


class Server:
    """The real reference server on the host, named for the guest's view of it."""

    def __init__(self, binary, root):
        self.binary = binary
        self.data = os.path.join(root, "server")
        self.log_path = os.path.join(root, "server.log")
        self.process = subprocess.Popen(
            [binary, "--data", self.data, "serve", "--listen", "127.0.0.1:0", "--heartbeat", "2s",
             "--server-name", GUEST_SERVER, "--sweep-interval", "1s"],
            stdout=subprocess.PIPE, stderr=open(self.log_path, "w"), text=True)
        line = self.process.stdout.readline()
        check(line.startswith("listening on 127.0.0.1:"), f"server did not start: {line!r}")
        self.port = int(line.strip().rsplit(":", 1)[1])

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)

    def admin(self, *args, stdin=None):
        result = subprocess.run([self.binary, "--data", self.data, *args], input=stdin,
                                capture_output=True, text=True, env={**os.environ, "LATCHKEY_LOG": "warn"})
        check(result.returncode == 0, f"latchkey-server {' '.join(args)}: {result.stderr}")
        return result.stdout

    def action(self, kind, device, *extra):
        return json.loads(self.admin("action", kind, "--device", device, "--json", *extra))

    def row(self, command_id):
        rows = json.loads(self.admin("actions", "--json"))
        matching = [r for r in rows if r["command_id"] == command_id]
        check(len(matching) <= 1, f"{len(matching)} rows for {command_id}")
        return matching[0] if matching else None

    def wait_result(self, command_id, timeout=120):
        return wait_for(f"the result of {command_id}", timeout, lambda: (
            (r := self.row(command_id)) and r["state"] not in ("pending", "sent") and r))

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()


class Vm:
    def __init__(self, image, root, port):
        self.root = root
        self.disk = os.path.join(root, "disk.img")
        shutil.copyfile(os.path.join(image, "disk.img"), self.disk)
        self.qga_path = os.path.join(root, "qga.sock")
        self.console = os.path.join(root, "console.log")
        forward = f"guestfwd=tcp:{GUEST_SERVER}:{port}-cmd:busybox nc 127.0.0.1 {port}"
        self.process = subprocess.Popen([
            "qemu-system-x86_64", "-m", "1024", "-smp", "2", "-nographic",
            "-kernel", os.path.join(image, "vmlinuz"), "-initrd", os.path.join(image, "initramfs.gz"),
            "-append", "console=ttyS0 root=/dev/vda net.ifnames=0 quiet",
            "-drive", f"file={self.disk},if=virtio,format=raw",
            "-netdev", f"user,id=n0,restrict=on,{forward}",
            "-device", "virtio-net-pci,netdev=n0,romfile=",
            "-chardev", f"socket,id=qga0,path={self.qga_path},server=on,wait=off",
            "-device", "virtio-serial", "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
        ], stdin=subprocess.DEVNULL, stdout=open(self.console, "w"), stderr=subprocess.STDOUT)
        self.agent = GuestAgent(self.qga_path)

    def stop(self):
        self.agent.close()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def console_tail(self, n=40):
        with open(self.console, errors="replace") as f:
            return "".join(f.readlines()[-n:])


def emit(metric, value, unit):
    print(json.dumps({"bench": "vm-test", "metric": metric, "value": value, "unit": unit,
                      "baseline": None, "ratio": None}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", required=True, help="directory from build-image.sh")
    parser.add_argument("--deb", required=True)
    parser.add_argument("--server", required=True, help="latchkey-server binary")
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    args = parser.parse_args()

    root = tempfile.mkdtemp(prefix="latchkey-vm.")
    server = Server(args.server, root)
    vm = Vm(args.image, root, server.port)
    g = vm.agent
    started = time.monotonic()
    step = "boot"
    try:
        g.connect(timeout=240)
        boot = time.monotonic() - started
        emit("boot_to_guest_agent", round(boot, 1), "s")
        code, out, _ = g.sh("stat -c '%U:%G %a' /etc/shadow; grep '^kiosk:' /etc/shadow | cut -d: -f2 | cut -c1-3")
        check(out.split() == ["root:shadow", "640", "$y$"], f"the guest's shadow is not Debian's: {out}")

        step = "install"
        with open(args.deb, "rb") as f:
            g.write("/root/" + os.path.basename(args.deb), f.read())
        g.ok(f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q /root/{os.path.basename(args.deb)}", timeout=300)
        enabled = g.sh("systemctl is-enabled latchkey")[1].strip()
        active = g.sh("systemctl is-active latchkey")[1].strip()
        check(enabled == "enabled" and active == "inactive", f"after install: {enabled}/{active}")
        check(g.ok("stat -c %a /var/lib/latchkey").strip() == "700", "state directory mode")
        check("/etc/latchkey/config.toml" in g.ok("dpkg-query -W -f='${Conffiles}' latchkey"), "config is no conffile")
        exposure = g.ok("systemd-analyze security latchkey.service --no-pager | tail -1")
        score = re.search(r"latchkey\.service: ([0-9.]+)", exposure)
        check(score, f"no exposure score in {exposure!r}")
        emit("unit_exposure_in_guest", float(score.group(1)), "score")

        step = "configure"
        with open(os.path.join(server.data, "ca.pem"), "rb") as f:
            g.write("/etc/latchkey/server-ca.pem", f.read())
        lock = (f'["/bin/sh", "-c", "echo start >> {LOCKS}; sleep 3; echo done >> {LOCKS}"]')
        dropin = (f'[server]\nurl = "https://{GUEST_SERVER}:{server.port}"\n'
                  f'[platform]\nlinux_user = "kiosk"\nlock_command = {lock}\n'
                  '[connect]\nheartbeat = "2s"\npoll_interval = "2s"\nbackoff_max = "3s"\n')
        g.write("/etc/latchkey/config.d/50-vm-test.toml", dropin.encode())
        # A short watchdog so the SIGSTOP step does not wait the shipped minute.
        g.ok("mkdir -p /etc/systemd/system/latchkey.service.d && "
             "printf '[Service]\\nWatchdogSec=10s\\n' > /etc/systemd/system/latchkey.service.d/50-vm-test.conf && "
             "systemctl daemon-reload")

        step = "enroll"
        token = server.admin("token", "create", "--ttl", "10m").strip()
        out = g.ok("latchkey enroll --config /etc/latchkey/config.toml --token-file -", stdin=token + "\n")
        device = out.strip().removeprefix("enrolled as ")
        g.ok("systemctl start latchkey", timeout=60)
        check(g.sh("systemctl is-active latchkey")[1].strip() == "active", "not active once started")

        step = "reset"
        queued = server.action("reset-passcode", device)
        passcode = queued["temporary_passcode"]
        check(passcode, f"no temporary passcode: {queued}")
        row = server.wait_result(queued["command_id"])
        check(row["state"] == "succeeded", f"reset: {row}")
        check(g.sh("pamtester login kiosk authenticate", stdin=passcode + "\n")[0] == 0,
              "PAM refuses the new password")
        check(g.sh("pamtester login kiosk authenticate", stdin="Initial-Pass-4821\n")[0] != 0,
              "PAM still accepts the old password")
        meta = g.ok("stat -c '%U:%G %a' /etc/shadow /etc/shadow-").split("\n")
        check(meta[0] == "root:shadow 640", f"/etc/shadow after the reset: {meta[0]}")
        check(meta[1].startswith("root:shadow"), f"/etc/shadow- after the reset: {meta[1]}")

        def locks(word):
            code, out, _ = g.sh(f"grep -c '^{word}$' {LOCKS}")
            return int(out.strip() or 0)

        step = "lock"
        queued = server.action("lock", device)
        check(server.wait_result(queued["command_id"])["state"] == "succeeded", "lock failed")
        check((locks("start"), locks("done")) == (1, 1), "the lock command did not run exactly once")

        def restarts():
            return int(g.ok("systemctl show -p NRestarts --value latchkey").strip())

        def active_again(before):
            return lambda: restarts() > before and g.sh("systemctl is-active latchkey")[1].strip() == "active"

        step = "kill"
        before = restarts()
        queued = server.action("lock", device)
        wait_for("the lock to start", 60, lambda: locks("start") == 2)
        g.ok("systemctl kill -s KILL latchkey")
        wait_for("systemd to restart the agent", 60, active_again(before))
        row = server.wait_result(queued["command_id"])
        # The lock command died with the agent: the honest answer is "cannot tell".
        honest = row["state"] == "succeeded" or (
            row["error_code"] == "INTERRUPTED" and row["outputs"].get("effect") == "unknown")
        check(honest, f"after SIGKILL: {row}")
        check(locks("start") == 2, "the interrupted lock ran again after the restart")
        emit("kill_result", f"{row['state']} {row['error_code']}".strip(), "outcome")

        step = "watchdog"
        before = restarts()
        g.ok("kill -STOP $(systemctl show -p MainPID --value latchkey)")
        wait_for("the watchdog to restart the agent", 90, active_again(before), interval=1)
        journal = g.ok("journalctl -u latchkey --no-pager -o cat")
        check("Watchdog timeout" in journal or "watchdog" in journal.lower(), "no watchdog timeout in the journal")
        queued = server.action("lock", device)
        check(server.wait_result(queued["command_id"])["state"] == "succeeded", "no commands after the watchdog")

        step = "reboot"
        g.sh("systemd-run --on-active=1 systemctl reboot")
        wait_for("the guest to go down", 60, lambda: not _alive(g))
        queued = server.action("lock", device)
        reboot_started = time.monotonic()
        g.connect(timeout=240)
        row = server.wait_result(queued["command_id"], timeout=180)
        check(row["state"] == "succeeded", f"after the reboot: {row}")
        emit("reboot_to_result", round(time.monotonic() - reboot_started, 1), "s")

        step = "stop"
        started_locks, done_locks = locks("start"), locks("done")
        queued = server.action("lock", device)
        wait_for("the lock to start", 60, lambda: locks("start") == started_locks + 1)
        g.ok("systemctl stop latchkey", timeout=60)
        check(locks("done") == done_locks + 1, "systemctl stop cut the lock short")
        row = server.row(queued["command_id"])
        check(row["state"] == "succeeded", f"the in-flight lock was not reported before exit: {row}")

        step = "journal"
        warnings = g.ok("journalctl -u latchkey -p warning --no-pager -o cat")
        everything = g.ok("journalctl -u latchkey --no-pager -o cat")
        check("checked in" in everything, "info lines are missing from the journal")
        check("checked in" not in warnings, "info lines pass `-p warning`: priorities are not set")
        check(warnings.strip(), "no warning reached journald (the SIGKILL recovery warns)")
        for text, where in ((everything, "the guest journal"), (server.log(), "the server log"),
                            (g.ok("cat /var/log/*.log 2>/dev/null; true"), "guest logs")):
            check(passcode not in text, f"the temporary password is in {where}")

        step = "remove"
        g.ok("dpkg -r latchkey", timeout=120)
        check(g.sh("test -f /var/lib/latchkey/identity.json")[0] == 0, "dpkg -r deleted the enrollment")
        g.ok("dpkg --purge latchkey", timeout=120)
        check(g.sh("test -e /var/lib/latchkey || test -e /etc/latchkey")[0] != 0, "dpkg --purge left state behind")

        emit("vm_test_total", round(time.monotonic() - started, 1), "s")
        print("vm test: every step passed")
        return 0
    except StepFailed as e:
        print(f"vm test FAILED at step {step}: {e}", file=sys.stderr)
        print("--- guest console (tail)", file=sys.stderr)
        print(vm.console_tail(), file=sys.stderr)
        try:
            print("--- guest journal (latchkey)", file=sys.stderr)
            print(g.sh("journalctl -u latchkey --no-pager -n 60")[1], file=sys.stderr)
        except Exception:  # the guest may be gone
            pass
        print(f"--- run directory {root}", file=sys.stderr)
        args.keep = True
        return 1
    finally:
        vm.stop()
        server.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def _alive(agent):
    """True while the guest agent still answers."""
    try:
        agent.sock.settimeout(2)
        agent.call("guest-ping")
        return True
    except (OSError, ConnectionError, ValueError, StepFailed, AttributeError):
        return False


if __name__ == "__main__":
    sys.exit(main())
