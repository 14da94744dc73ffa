"""The TensorRT runtime side without TensorRT: the one logger, CUDA discovery and its one-line failures,
and the runner's own logic (batch split, buffer growth, worker threads, cuda-python buffers, the torch
runner's captured buckets) on host memory.

Only the library boundary is replaced, by stand-ins of ``tensorrt`` and cuda-python (``FakeILogger``,
``FakeCudart``, ``BoundaryFakeEngine``, ``HostCudart``: the boundary fakes); the runner, its batch split
and both buffer layers are the real code. Real engines: tests/test_tensorrt.py ``TestWithTensorRT``.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from cezsar.deploy import tensorrt as dt
from cezsar.errors import CezsarError
from converter import tensorrt_build as tb
from tests.helpers.fake_tensorrt import TRT10

# -- the one TensorRT logger, CUDA discovery, one-line failures (stand-ins for tensorrt / cuda-python) ------


class FakeSeverity:
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = 0, 1, 2, 3, 4


class FakeILogger:
    """Stand-in for ``tensorrt.ILogger`` (boundary fake): subclasses override ``log``."""

    Severity = FakeSeverity

    def __init__(self) -> None:
        pass


def trt_with_logger(**attrs: Any) -> Any:
    return SimpleNamespace(__version__="10.3.0", Builder=object, ILogger=FakeILogger, **attrs)


@pytest.fixture()
def fresh_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    """No logger made yet in this process (the module keeps one for the process)."""
    monkeypatch.setattr(dt, "_LOGGER", None)


def test_one_logger_reports_the_last_error_not_the_last_warning(fresh_logger: None) -> None:
    trt = trt_with_logger()
    logger = dt.trt_logger(trt)
    assert dt.trt_logger(trt) is logger  # one logger for the builder, the parser and the runtime
    mark = dt.error_mark()
    assert dt.last_error(mark) == "no error message from TensorRT"
    logger.log(FakeSeverity.ERROR, "Network has dynamic or shape inputs,\n but no optimization profile")
    logger.log(FakeSeverity.WARNING, "a later warning that is not the cause")
    logger.log(FakeSeverity.INFO, "info")
    assert dt.last_error(mark) == "Network has dynamic or shape inputs, but no optimization profile"
    later = dt.error_mark()
    assert dt.last_error(later) == "no error message from TensorRT"  # nothing new since the mark
    logger.log(FakeSeverity.INTERNAL_ERROR, "internal")
    assert dt.last_error(later) == "internal"


class FakeCudaError(int):
    """A cuda-python error enum value: an int with a name."""

    @property
    def name(self) -> str:
        return {0: "cudaSuccess", 35: "cudaErrorInsufficientDriver"}[int(self)]


class FakeCudart:
    """Stand-in for cuda-python's runtime module (boundary fake)."""

    def __init__(self, err: int, n: int) -> None:
        self.err, self.n = err, n

    def cudaGetDeviceCount(self) -> tuple[FakeCudaError, int]:  # noqa: N802 - cuda-python's name
        return FakeCudaError(self.err), self.n


def test_cuda_python_error_falls_back_to_torch_and_names_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dt, "cuda_runtime", lambda: FakeCudart(0, 2))
    assert dt.cuda_device_count() == (2, "cuda-python")
    monkeypatch.setattr(dt, "cuda_runtime", lambda: FakeCudart(35, 0))
    monkeypatch.setattr(dt, "_torch_device_count", lambda: 1)  # torch reaches the GPU the driver runs
    assert dt.cuda_device_count() == (1, "torch (cuda-python: cudaErrorInsufficientDriver)")
    monkeypatch.setattr(dt, "_torch_device_count", lambda: None)  # no torch: the error is the answer
    assert dt.cuda_device_count() == (0, "cuda-python: cudaErrorInsufficientDriver")
    monkeypatch.setattr(dt, "cuda_runtime", lambda: None)
    assert dt.cuda_device_count() == (-1, "")


def test_backend_says_why_no_cuda_device(monkeypatch: pytest.MonkeyPatch) -> None:
    from cezsar.backends import tensorrt as bt

    monkeypatch.setattr(bt, "tensorrt_module", lambda: SimpleNamespace(__version__="10.3.0", Runtime=object))
    monkeypatch.setattr(bt, "cuda_device_count", lambda: (0, "cuda-python: cudaErrorInsufficientDriver"))
    assert bt.TensorRTBackend.available() == (False, "no CUDA device (cuda-python: cudaErrorInsufficientDriver)")
    monkeypatch.setattr(bt, "cuda_device_count", lambda: (1, "torch (cuda-python: cudaErrorInsufficientDriver)"))
    ok, why = bt.TensorRTBackend.available()
    assert ok and why == "TensorRT 10.3.0, 1 CUDA device(s) via torch (cuda-python: cudaErrorInsufficientDriver)"


def test_builder_without_gpu_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_logger: None) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    src = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(src))

    def no_gpu_builder(logger: Any) -> Any:
        logger.log(FakeSeverity.ERROR, "CUDA initialization failure with error: 35")
        raise TypeError("pybind11::init(): factory function returned nullptr")

    trt = trt_with_logger(**{k: v for k, v in vars(TRT10).items() if k not in ("__version__", "Builder")})
    trt.Builder = no_gpu_builder
    monkeypatch.setattr(tb, "require_tensorrt", lambda: trt)
    with pytest.raises(CezsarError, match="cannot create a builder .*no usable CUDA GPU.*nullptr") as e:
        tb.build_engine(src, tmp_path / "m.engine", "fp16")
    assert "\n" not in str(e.value) and not (tmp_path / "m.engine").exists()


def test_runner_refuses_a_missing_execution_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_logger: None
) -> None:
    from cezsar.backends import tensorrt as bt

    class Engine:
        num_io_tensors = 2
        logger: Any = None

        def get_tensor_name(self, i: int) -> str:
            return ("x", "y")[i]

        def create_execution_context(self) -> None:
            self.logger.log(FakeSeverity.ERROR, "out of device memory")
            return None

    class Runtime:
        def __init__(self, logger: Any) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, blob: bytes) -> Engine:
            engine = Engine()
            engine.logger = self.logger
            return engine

    monkeypatch.setattr(bt, "require_tensorrt", lambda: trt_with_logger(Runtime=Runtime))
    engine = tmp_path / "frame_encoder.fp16.engine"
    engine.write_bytes(b"plan")
    runner = bt.TensorRTRunner(engine, {"profile": {"min": 1, "opt": 8, "max": 64}})
    assert runner.max_batch == 64 and not runner.is_active
    with pytest.raises(CezsarError, match="cannot create an execution context .*out of device memory"):
        runner.activate()
    assert not runner.is_active


# -- the TensorRT runner's own logic on host memory: split, buffer growth, threads --------------------------
#
# Only the TensorRT engine (and, for CudaPythonBuffers, cuda-python's runtime module) is replaced: the
# runner, its batch split and both buffer layers are the real code. Addresses are host addresses here.


def _host_floats(addr: int, count: int) -> np.ndarray:
    import ctypes

    return np.ctypeslib.as_array((ctypes.c_float * count).from_address(addr))


OUT_DIM = 3


def expected(x: np.ndarray) -> np.ndarray:
    """What BoundaryFakeContext computes: the first OUT_DIM values of each sample, times 2, plus 1."""
    return x.reshape(len(x), -1)[:, :OUT_DIM] * np.float32(2) + np.float32(1)


class BoundaryFakeContext:
    """Stand-in for ``tensorrt.IExecutionContext`` (boundary fake): name-based I/O of TensorRT >= 8.5.
    ``execute_async_v3`` reads the bound input address and writes the bound output address."""

    def __init__(self, engine: BoundaryFakeEngine) -> None:
        self.engine = engine
        self.shape: tuple[int, ...] = ()
        self.addr: dict[str, int] = {}
        self.executed: list[tuple[int, ...]] = []
        self.threads: set[str] = set()

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        assert name == "x"
        if not self.engine.profile[0] <= shape[0] <= self.engine.profile[1]:
            return False  # as TensorRT: outside the optimization profile
        self.shape = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        assert name == "y"
        return (self.shape[0], OUT_DIM)

    def set_tensor_address(self, name: str, addr: int) -> bool:
        self.addr[name] = int(addr)
        return True

    def execute_async_v3(self, stream: int) -> bool:
        import threading

        n = int(np.prod(self.shape))
        x = _host_floats(self.addr["x"], n).reshape(self.shape)
        _host_floats(self.addr["y"], self.shape[0] * OUT_DIM)[:] = expected(x).reshape(-1)
        self.executed.append(self.shape)
        self.threads.add(threading.current_thread().name)
        return True


class BoundaryFakeEngine:
    """Stand-in for ``tensorrt.ICudaEngine`` (boundary fake): input "x", output "y", both float32."""

    num_io_tensors = 2

    def __init__(self, profile: tuple[int, int]) -> None:
        self.profile = profile
        self.contexts: list[BoundaryFakeContext] = []

    def get_tensor_name(self, i: int) -> str:
        return ("x", "y")[i]

    def get_tensor_mode(self, name: str) -> str:
        return "in" if name == "x" else "out"

    def get_tensor_dtype(self, name: str) -> str:
        return "float32"

    def create_execution_context(self) -> BoundaryFakeContext:
        self.contexts.append(BoundaryFakeContext(self))
        return self.contexts[-1]


class HostCudart:
    """Stand-in for cuda-python's runtime module (boundary fake) whose "device" memory is host memory."""

    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)  # noqa: N815

    def __init__(self) -> None:
        self.blocks: dict[int, Any] = {}
        self.copies: list[int] = []

    def cudaStreamCreate(self) -> tuple[FakeCudaError, int]:  # noqa: N802 - cuda-python's names
        return FakeCudaError(0), 7

    def cudaStreamDestroy(self, stream: int) -> tuple[FakeCudaError]:  # noqa: N802
        return (FakeCudaError(0),)

    def cudaMalloc(self, nbytes: int) -> tuple[FakeCudaError, int]:  # noqa: N802
        import ctypes

        block = ctypes.create_string_buffer(nbytes)
        self.blocks[ctypes.addressof(block)] = block
        return FakeCudaError(0), ctypes.addressof(block)

    def cudaFree(self, ptr: int) -> tuple[FakeCudaError]:  # noqa: N802
        del self.blocks[int(ptr)]
        return (FakeCudaError(0),)

    def cudaMemcpyAsync(self, dst: int, src: int, n: int, kind: int, stream: int) -> tuple[FakeCudaError]:  # noqa: N802
        import ctypes

        assert stream == 7
        ctypes.memmove(int(dst), int(src), int(n))
        self.copies.append(kind)
        return (FakeCudaError(0),)

    def cudaStreamSynchronize(self, stream: int) -> tuple[FakeCudaError]:  # noqa: N802
        return (FakeCudaError(0),)


def _fake_runtime_trt(engine: BoundaryFakeEngine) -> Any:
    class Runtime:
        def __init__(self, logger: Any) -> None:
            pass

        def deserialize_cuda_engine(self, blob: bytes) -> BoundaryFakeEngine:
            assert blob == b"plan"
            return engine

    return trt_with_logger(Runtime=Runtime, TensorIOMode=SimpleNamespace(INPUT="in", OUTPUT="out"), float32="float32")


def _buffer_layers() -> list[Any]:
    layers: list[Any] = [pytest.param("cuda-python", id="cuda-python-on-host")]
    if __import__("importlib").util.find_spec("torch") is not None:
        layers.append(pytest.param("torch", id="torch-on-host"))
    return layers


@pytest.fixture()
def fake_runner(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_logger: None
) -> tuple[Any, BoundaryFakeEngine, Any]:
    from cezsar.backends import tensorrt as bt

    engine = BoundaryFakeEngine(profile=(1, 4))
    monkeypatch.setattr(bt, "require_tensorrt", lambda: _fake_runtime_trt(engine))
    plan = tmp_path / "frame_encoder.fp16.engine"
    plan.write_bytes(b"plan")
    made: list[Any] = []

    def buffers() -> Any:
        made.append(bt.CudaPythonBuffers(HostCudart()) if request.param == "cuda-python" else bt.TorchBuffers("cpu"))
        return made[-1]

    runner = bt.TensorRTRunner(plan, {"profile": {"min": 1, "opt": 2, "max": 4}}, buffers=buffers).activate()
    yield runner, engine, made[0]
    runner.deactivate()


@pytest.mark.parametrize("fake_runner", _buffer_layers(), indirect=True)
def test_trt_runner_splits_a_batch_above_the_profile_maximum(fake_runner: tuple[Any, Any, Any]) -> None:
    runner, engine, _ = fake_runner
    x = np.random.default_rng(0).standard_normal((10, 2, 5)).astype(np.float32)
    y = runner(x)
    assert engine.contexts[0].executed == [(4, 2, 5), (4, 2, 5), (2, 2, 5)]
    np.testing.assert_array_equal(y, expected(x))  # bit-exact: every chunk read back from its own buffer


@pytest.mark.parametrize("fake_runner", _buffer_layers(), indirect=True)
def test_trt_runner_buffers_grow_between_calls(fake_runner: tuple[Any, Any, Any]) -> None:
    runner, engine, buffers = fake_runner
    rng = np.random.default_rng(1)
    outs = []
    for n in (1, 3, 2, 4, 1):
        x = rng.standard_normal((n, 6)).astype(np.float32)
        outs.append((runner(x), expected(x)))
    for got, want in outs:
        np.testing.assert_array_equal(got, want)
    # input and output grow at batch 1, 3 and 4; batches 2 and 1 reuse the larger buffers
    assert buffers.grown == 6
    assert [s[0] for s in engine.contexts[0].executed] == [1, 3, 2, 4, 1]


@pytest.mark.parametrize("fake_runner", _buffer_layers(), indirect=True)
def test_trt_runner_called_from_worker_threads(fake_runner: tuple[Any, Any, Any]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    runner, engine, _ = fake_runner
    xs = [np.random.default_rng(s).standard_normal((1 + s % 6, 4)).astype(np.float32) for s in range(24)]
    with ThreadPoolExecutor(4, thread_name_prefix="trt-worker") as pool:
        ys = list(pool.map(runner, xs))
    for x, y in zip(xs, ys, strict=True):
        np.testing.assert_array_equal(y, expected(x))  # the lock keeps each call's binding and buffers its own
    assert all(t.startswith("trt-worker") for t in engine.contexts[0].threads)
    assert runner.calls == 24


def test_trt_runner_uses_cuda_python_buffers_when_torch_has_no_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_logger: None
) -> None:
    """torch installed but without CUDA: the default buffer layer is cuda-python's, and it runs bit-exact."""
    torch = pytest.importorskip("torch")
    from cezsar.backends import tensorrt as bt

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cudart = HostCudart()
    monkeypatch.setattr(bt, "cuda_runtime", lambda: cudart)
    engine = BoundaryFakeEngine(profile=(1, 8))
    monkeypatch.setattr(bt, "require_tensorrt", lambda: _fake_runtime_trt(engine))
    plan = tmp_path / "temporal_head.fp16.engine"
    plan.write_bytes(b"plan")
    with bt.TensorRTRunner(plan, {"profile": {"min": 1, "opt": 1, "max": 8}}) as runner:
        assert isinstance(runner.buffers, bt.CudaPythonBuffers)
        x = np.random.default_rng(2).standard_normal((11, 3, 4)).astype(np.float32)
        np.testing.assert_array_equal(runner(x), expected(x))
        assert cudart.copies.count(1) == 2 and cudart.copies.count(2) == 2  # two chunks: 8 + 3
    assert runner.buffers is None and cudart.blocks == {}  # deactivation frees the device memory


def test_cuda_python_buffers_report_a_cuda_error_in_one_line() -> None:
    from cezsar.backends.tensorrt import CudaPythonBuffers

    class OutOfMemory(HostCudart):
        def cudaMalloc(self, nbytes: int) -> tuple[FakeCudaError, int]:  # noqa: N802
            return FakeCudaError(35), 0

    buffers = CudaPythonBuffers(OutOfMemory())
    with pytest.raises(CezsarError, match=r"cudaMalloc\(64\) failed: cudaErrorInsufficientDriver"):
        buffers.run(np.zeros((4, 4), np.float32), (4, 4), lambda a, b: None, lambda s: True)


def test_torch_runner_captures_every_bucket_at_load_and_splits_large_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """All CUDA graphs are captured at activation, in one pool, for a bounded set of buckets; calls only
    replay. n > 64 used to raise StopIteration; now the batch runs in chunks of the largest bucket. The
    CUDA pieces (pool, capture, replay) are recording stand-ins: no GPU here (scripts/gpu_verify.py runs
    the real ones against CPU fp32)."""
    pytest.importorskip("torch")
    from cezsar.backends.torch import BUCKETS, TorchRunner, bucket_for

    assert [bucket_for(n) for n in (1, 3, 64)] == [1, 4, 64]
    with pytest.raises(CezsarError, match="batch 65 exceeds"):
        bucket_for(65)
    with pytest.raises(CezsarError, match="CUDA-graph buckets"):
        TorchRunner(None, "cuda", True, True, sample_shape=(3,), buckets=tuple(range(1, 10)))
    captured: list[tuple[int, Any]] = []
    pool = object()
    monkeypatch.setattr(TorchRunner, "_new_pool", lambda self: pool)
    monkeypatch.setattr(TorchRunner, "_capture", lambda self, b: captured.append((b, self._pool)) or (b, None, None))
    runner = TorchRunner(module=None, device="cuda", half=True, cuda_graphs=True, sample_shape=(3,))
    assert captured == []  # nothing before activation
    runner.activate()
    assert captured == [(b, pool) for b in BUCKETS]  # every bucket, one shared pool, at load
    assert runner.max_batch == 64
    seen: list[int] = []

    def replay(x: np.ndarray) -> np.ndarray:  # stand-in for the CUDA graph replay
        seen.append(runner.bucket_for(len(x)))
        return x[:, :2].astype(np.float32)

    runner._replay = replay  # type: ignore[method-assign]
    x = np.arange(150 * 3, dtype=np.float32).reshape(150, 3)
    y = runner(x)
    assert seen == [64, 64, 32] and max(seen) <= BUCKETS[-1]
    np.testing.assert_array_equal(y, x[:, :2])
    assert runner.calls == 1 and runner.seconds > 0
    assert len(captured) == len(BUCKETS)  # calls never capture
    runner.deactivate()
    assert runner._graphs == {} and runner._pool is None
    small = TorchRunner(None, "cuda", False, True, sample_shape=(3,), buckets=(8, 1, 2))
    captured.clear()
    small.activate()
    assert [b for b, _ in captured] == [1, 2, 8] and small.max_batch == 8
