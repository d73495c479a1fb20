"""Model import and preparation on real ONNX, TFLite and .pt2 files."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from harness.errors import JobError
from harness.modelio import InputSpec, load, parse_input_spec, read_model, to_relax

import testmodels
from tflite_builder import (
    cnn_tflite,
    dynamic_batch_tflite,
    mlp_tflite,
    unsupported_op_tflite,
)


class TestInputSpec:
    def test_plain(self) -> None:
        assert parse_input_spec("x:1x3x224x224") == InputSpec("x", (1, 3, 224, 224), None)

    def test_dtype_and_alias(self) -> None:
        assert parse_input_spec("ids:1x128:int64").dtype == "int64"
        assert parse_input_spec("x:2x2:fp16").dtype == "float16"

    def test_name_with_colons(self) -> None:
        spec = parse_input_spec("serving_default:input:0:1x10:float32")
        assert spec == InputSpec("serving_default:input:0", (1, 10), "float32")

    def test_scalar(self) -> None:
        assert parse_input_spec("t:scalar").shape == ()

    @pytest.mark.parametrize("text", ["x", "x:", "x:1x", "x:ax3", ":1x2", "x:1x0", "x:1x2:complex"])
    def test_refused(self, text: str) -> None:
        with pytest.raises(JobError) as info:
            parse_input_spec(text)
        assert info.value.stage == "prepare"


class TestOnnx:
    def test_describe(self, tmp_path: Path) -> None:
        model = load(testmodels.save(testmodels.mobilenet_like(), tmp_path, "mnet"))
        doc = model.description().model_dump(mode="json")
        assert doc["format"] == "onnx"
        assert doc["inputs"] == [{"name": "input", "shape": [1, 3, 32, 32], "dtype": "float32"}]
        assert doc["outputs"][0]["shape"] == [1, 10]
        assert len(doc["sha256"]) == 64

    def test_dynamic_dimension_needs_a_spec(self, tmp_path: Path) -> None:
        path = testmodels.save(testmodels.dynamic_batch(), tmp_path, "dyn")
        with pytest.raises(JobError) as info:
            load(path)
        assert info.value.stage == "prepare"
        assert "'images'" in info.value.message and "dimension 0" in info.value.message
        assert "'batch'" in info.value.message and "--input images:1x3x8x8" in info.value.message

    def test_preparation_makes_exported_shape_chains_importable(self, tmp_path: Path) -> None:
        from tvm.relax.frontend.onnx import from_onnx

        raw = testmodels.dynamic_batch()
        # Without preparation TVM's importer cannot build the Reshape of a computed shape.
        with pytest.raises(Exception, match="Reshape"):
            from_onnx(raw, shape_dict={"images": [2, 3, 8, 8]}, keep_params_in_input=False)
        model = load(testmodels.save(raw, tmp_path, "dyn"), [parse_input_spec("images:2x3x8x8")])
        assert model.inputs[0].shape == (2, 3, 8, 8)
        assert model.outputs[0].shape == (2, 5)
        assert "Shape" not in {n.op_type for n in model.graph.graph.node}
        assert to_relax(model) is not None

    @pytest.mark.parametrize(
        ("spec", "needle"),
        [
            ("images:2x4x8x8", "dimension 1 is fixed at 3"),
            ("images:2x3x8", "rank 4"),
            ("pixels:1x3x8x8", "has inputs 'images'"),
            ("images:1x3x8x8:int8", "is float32 in the model"),
        ],
    )
    def test_wrong_specs(self, tmp_path: Path, spec: str, needle: str) -> None:
        path = testmodels.save(testmodels.dynamic_batch(), tmp_path, "dyn")
        with pytest.raises(JobError) as info:
            load(path, [parse_input_spec(spec)])
        assert info.value.stage == "prepare"
        assert needle in info.value.message

    def test_unsupported_operator_is_named(self, tmp_path: Path) -> None:
        model = load(testmodels.save(testmodels.unsupported_op(), tmp_path, "det"))
        with pytest.raises(JobError) as info:
            to_relax(model)
        assert info.value.stage == "import"
        assert "Det" in info.value.message and "ort" in info.value.message


class TestBadFiles:
    def _write(self, tmp_path: Path, data: bytes, name: str = "m.onnx") -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    def test_text_file(self, tmp_path: Path) -> None:
        with pytest.raises(JobError, match="not") as info:
            load(self._write(tmp_path, b"this is a README, not a model\n" * 20))
        assert info.value.stage == "import"

    def test_truncated_onnx(self, tmp_path: Path) -> None:
        data = testmodels.mobilenet_like().SerializeToString()
        with pytest.raises(JobError) as info:
            load(self._write(tmp_path, data[: len(data) // 2]))
        assert info.value.stage == "import"
        assert "truncated" in info.value.message

    def test_empty(self, tmp_path: Path) -> None:
        with pytest.raises(JobError, match="empty"):
            load(self._write(tmp_path, b""))

    def test_missing_and_directory(self, tmp_path: Path) -> None:
        with pytest.raises(JobError, match="does not exist"):
            read_model(tmp_path / "nope.onnx")
        with pytest.raises(JobError, match="directory"):
            read_model(tmp_path)

    def test_png_is_not_a_model(self, tmp_path: Path) -> None:
        png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
        with pytest.raises(JobError) as info:
            load(self._write(tmp_path, png, "cat.png"))
        assert info.value.stage == "import"

    def test_zip_that_is_not_pt2(self, tmp_path: Path) -> None:
        import zipfile

        path = tmp_path / "x.pt2"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("hello.txt", "hi")
        with pytest.raises(JobError, match="not a PyTorch ExportedProgram"):
            load(path)

    def test_empty_graph(self, tmp_path: Path) -> None:
        graph = onnx.helper.make_graph(
            [], "g", [], [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]
        )
        model = onnx.helper.make_model(graph, ir_version=10)
        with pytest.raises(JobError, match="empty graph"):
            load(self._write(tmp_path, model.SerializeToString()))


class TestTflite:
    def test_describe_and_import(self, tmp_path: Path) -> None:
        path = tmp_path / "cnn.tflite"
        path.write_bytes(cnn_tflite())
        model = load(path)
        assert model.format == "tflite"
        assert model.inputs[0].shape == (1, 16, 16, 3)
        assert to_relax(model) is not None

    def test_dynamic_batch(self, tmp_path: Path) -> None:
        path = tmp_path / "dyn.tflite"
        path.write_bytes(dynamic_batch_tflite())
        with pytest.raises(JobError, match="dynamic dimension 0"):
            load(path)
        model = load(path, [parse_input_spec("x:4x16")])
        assert model.inputs[0].shape == (4, 16)

    def test_unsupported_operator(self, tmp_path: Path) -> None:
        path = tmp_path / "dus.tflite"
        path.write_bytes(unsupported_op_tflite())
        with pytest.raises(JobError, match="DYNAMIC_UPDATE_SLICE") as info:
            to_relax(load(path))
        assert info.value.stage == "import"

    def test_truncated(self, tmp_path: Path) -> None:
        data = mlp_tflite()
        path = tmp_path / "cut.tflite"
        path.write_bytes(data[: len(data) // 3])
        with pytest.raises(JobError) as info:
            load(path)
        assert info.value.stage == "import"
