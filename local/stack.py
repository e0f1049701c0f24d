"""The local stack: moto, the Bedrock stand-in, provisioning and `chalice local`, in one command."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = ROOT / ".local"
LOG_DIR = STATE_DIR / "logs"

HOST = "127.0.0.1"
AWS_PORT = 4566
BEDROCK_PORT = 4567
API_PORT = 8000
REGION = "us-east-1"
STAGE = "local"

logger = logging.getLogger("local.stack")


class StackError(Exception):
    """The stack cannot start or keep running; the message says why and what to do."""


@dataclass(frozen=True)
class StackConfig:
    """Ports and choices for one run of the local stack."""

    host: str = HOST
    aws_port: int = AWS_PORT
    bedrock_port: int = BEDROCK_PORT
    api_port: int = API_PORT
    region: str = REGION
    engine: str = "llama"
    job_interval_s: float = 30.0
    ready_timeout_s: float = 120.0
    state_dir: Path = STATE_DIR

    @property
    def aws_endpoint(self) -> str:
        return f"http://{self.host}:{self.aws_port}"

    @property
    def bedrock_endpoint(self) -> str:
        return f"http://{self.host}:{self.bedrock_port}"

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}/"

    def base_env(self) -> dict[str, str]:
        """What every child process and in-process AWS client of the stack sees."""
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL": self.aws_endpoint,
            "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": self.bedrock_endpoint,
        }


@dataclass
class Child:
    """A process the stack started, with its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes] = field(repr=False)


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_for_http(url: str, deadline: float, child: Child | None = None) -> None:
    """Wait until `url` answers any HTTP status (or the child dies, or time runs out)."""
    while time.monotonic() < deadline:
        if child is not None and child.process.poll() is not None:
            raise StackError(
                f"{child.name} exited with code {child.process.returncode} while starting; "
                f"see {child.log_path}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answered; the status does not matter here
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            time.sleep(0.2)
    where = f"; see {child.log_path}" if child else ""
    raise StackError(f"{url} did not answer in time{where}")


class LocalStack:
    """Starts, watches and stops the local system."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.children: list[Child] = []
        self.outputs: dict[str, str] = {}
        self._stopping = threading.Event()
        self._job_thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> dict[str, str]:
        """Bring every part up; return the outputs (also written to .local/outputs.json)."""
        config = self.config
        for name, port in (
            ("local AWS endpoint", config.aws_port),
            ("Bedrock stand-in", config.bedrock_port),
            ("API", config.api_port),
        ):
            if port_in_use(config.host, port):
                raise StackError(
                    f"port {port} ({name}) is already in use: is another local stack running? "
                    "Stop it (Ctrl-C) or free the port."
                )
        config.state_dir.mkdir(parents=True, exist_ok=True)
        (config.state_dir / "logs").mkdir(exist_ok=True)
        deadline = time.monotonic() + config.ready_timeout_s

        moto = self._spawn(
            "moto",
            [
                sys.executable,
                "-m",
                "local.aws_endpoint",
                "-H",
                config.host,
                "-p",
                str(config.aws_port),
            ],
            config.base_env(),
        )
        bedrock = self._spawn(
            "bedrock",
            [
                sys.executable,
                "-m",
                "local.bedrock_server",
                "--host",
                config.host,
                "--port",
                str(config.bedrock_port),
                "--engine",
                config.engine,
            ],
            config.base_env(),
        )
        # The provisioner loads the template with cfn-lint, whose import takes about half a
        # second: pay it while moto boots rather than after.
        importlib.import_module("local.provision")
        wait_for_http(f"{config.aws_endpoint}/moto-api/", deadline, moto)
        outputs = self._provision()
        wait_for_http(f"{config.bedrock_endpoint}/health", deadline, bedrock)
        api = self._spawn(
            "api",
            [
                str(Path(sys.executable).parent / "chalice"),
                "local",
                "--stage",
                STAGE,
                "--host",
                config.host,
                "--port",
                str(config.api_port),
                "--no-autoreload",
            ],
            self.app_env(outputs),
        )
        wait_for_http(config.api_url, deadline, api)
        self.outputs = self._write_outputs(outputs)
        self._start_jobs()
        return self.outputs

    def stop(self) -> None:
        """Stop the job loop and every child process (idempotent)."""
        self._stopping.set()
        if self._job_thread is not None:
            self._job_thread.join(timeout=10)
        for child in reversed(self.children):
            if child.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.process.pid, signal.SIGTERM)
        for child in reversed(self.children):
            try:
                child.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait(timeout=5)
            child.log_file.close()
        self.children.clear()
        with contextlib.suppress(FileNotFoundError):
            (self.config.state_dir / "outputs.json").unlink()

    def watch(self) -> None:
        """Block until a child dies (an error) or stop() is called."""
        while not self._stopping.wait(0.5):
            for child in self.children:
                if child.process.poll() is not None:
                    raise StackError(
                        f"{child.name} stopped unexpectedly (exit {child.process.returncode}); "
                        f"see {child.log_path}"
                    )

    # -- parts -----------------------------------------------------------------------------

    def _spawn(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> Child:
        log_path = self.config.state_dir / "logs" / f"{name}.log"
        log_file = log_path.open("ab")
        process = subprocess.Popen(
            list(argv),
            cwd=ROOT,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() reaches its children too
        )
        child = Child(name, process, log_path, log_file)
        self.children.append(child)
        return child

    def _provision(self) -> dict[str, str]:
        import boto3

        from local.provision import provision

        env = self.config.base_env()
        session = boto3.session.Session(
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=self.config.region,
        )
        return provision(
            stage=STAGE,
            region=self.config.region,
            session=session,
            endpoint_url=self.config.aws_endpoint,
        )

    def app_env(self, outputs: Mapping[str, str]) -> dict[str, str]:
        """Environment for `chalice local`: endpoints plus the provisioned resource names."""
        from chalicelib.settings import env_from_outputs

        env = {**self.config.base_env(), **env_from_outputs(outputs)}
        env["JWKS_URL"] = (
            f"{self.config.aws_endpoint}/{outputs['UserPoolId']}/.well-known/jwks.json"
        )
        return env

    def _write_outputs(self, provisioned: Mapping[str, str]) -> dict[str, str]:
        outputs = {
            **provisioned,
            "ApiGatewayUrl": self.config.api_url,
            "AwsEndpointUrl": self.config.aws_endpoint,
            "BedrockEndpointUrl": self.config.bedrock_endpoint,
            "Region": self.config.region,
            "Stage": STAGE,
        }
        path = self.config.state_dir / "outputs.json"
        path.write_text(json.dumps(outputs, indent=2) + "\n")
        return outputs

    def _start_jobs(self) -> None:
        job = scheduled_job(self.config, self.outputs)
        if job is None:
            return

        def loop() -> None:
            while not self._stopping.wait(self.config.job_interval_s):
                try:
                    job()
                except Exception:
                    logger.exception("scheduled job failed; will retry next interval")

        self._job_thread = threading.Thread(target=loop, name="partition-maintenance", daemon=True)
        self._job_thread.start()


JOB_TIMEOUT_S = 900.0  # a deployed run has Lambda's 15 minutes


def scheduled_job(config: StackConfig, outputs: Mapping[str, str]) -> Callable[[], None] | None:
    """The jobs the deployed schedules run: partition maintenance (today and yesterday), then
    the budget repair.

    Each call runs `local.partition_job` and `local.budget_repair_job` as child processes with
    the app's environment (their output goes to logs/jobs.log), so the jobs' clients and
    imports stay out of this process.
    """
    from chalicelib.settings import env_from_outputs

    env = {
        **os.environ,
        **config.base_env(),
        **env_from_outputs(outputs),
        "STAGE": STAGE,
        "PYTHONUNBUFFERED": "1",
    }
    log_path = config.state_dir / "logs" / "jobs.log"

    def run_module(module: str, name: str) -> str | None:
        with log_path.open("ab") as log:
            completed = subprocess.run(
                [sys.executable, "-m", module],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=JOB_TIMEOUT_S,
                check=False,
            )
        return None if completed.returncode == 0 else f"{name} exited {completed.returncode}"

    def run() -> None:
        # Both always run: one failing job does not hold up the other.
        failures = [
            failure
            for failure in (
                run_module("local.partition_job", "partition maintenance"),
                run_module("local.budget_repair_job", "budget repair"),  # every 5 min on AWS
            )
            if failure
        ]
        if failures:
            raise StackError(f"{'; '.join(failures)}; see {log_path}")

    return run


def parse_args(argv: Sequence[str] | None) -> StackConfig:
    parser = argparse.ArgumentParser(description="Run Bedrock SaaS Metering locally, offline.")
    parser.add_argument(
        "--engine",
        choices=["llama", "echo"],
        default="llama",
        help="model behind the Bedrock stand-in: the real SmolLM2-135M (default) or a fast echo",
    )
    parser.add_argument(
        "--job-interval",
        type=float,
        default=float(os.environ.get("METER_JOB_INTERVAL_S", "30")),
        help="seconds between partition-maintenance runs (default 30, at most 60 recommended)",
    )
    parser.add_argument("--ready-timeout", type=float, default=120.0)
    parser.add_argument("--aws-port", type=int, default=AWS_PORT)
    parser.add_argument("--bedrock-port", type=int, default=BEDROCK_PORT)
    parser.add_argument("--api-port", type=int, default=API_PORT)
    parser.add_argument(
        "--state-dir", type=Path, default=STATE_DIR, help="where outputs.json and logs/ go"
    )
    args = parser.parse_args(argv)
    return StackConfig(
        aws_port=args.aws_port,
        bedrock_port=args.bedrock_port,
        api_port=args.api_port,
        engine=args.engine,
        job_interval_s=args.job_interval,
        ready_timeout_s=args.ready_timeout,
        state_dir=args.state_dir.resolve(),
    )


def _shown(path: Path) -> str:
    """A path as the operator would type it: relative to the working directory when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("botocore").setLevel(logging.WARNING)  # not "Found credentials ..."
    config = parse_args(argv)
    stack = LocalStack(config)

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # Both, explicitly: a stack started in the background by a script inherits SIGINT ignored.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.monotonic()
    try:
        print("Starting the local stack (moto, Bedrock stand-in, provisioning, chalice local)...")
        outputs = stack.start()
        state = _shown(config.state_dir)
        print(
            f"Ready in {time.monotonic() - started:.1f}s: API {outputs['ApiGatewayUrl']}  "
            f"AWS endpoint {outputs['AwsEndpointUrl']}  model {config.engine} at "
            f"{outputs['BedrockEndpointUrl']}  outputs {state}/outputs.json  logs {state}/logs/  "
            "(Ctrl-C stops everything)",
            flush=True,
        )
        stack.watch()
    except KeyboardInterrupt:
        print("\nStopping the local stack...")
        return 0
    except StackError as exc:
        print(f"local stack: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
