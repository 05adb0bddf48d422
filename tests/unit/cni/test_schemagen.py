"""The schema generator refuses every model feature the run-time validator does not
implement, naming the field, rather than leaving a constraint out."""

from typing import Annotated, Literal, Optional, Union

import pytest
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, with_config
from typing_extensions import NotRequired, TypedDict

from cni_bridge.models import LOOSE
from cni_bridge.schemagen import SchemaNotSupported, render


def model(field_type, config=LOOSE):
    """A TypedDict called M with one field, `f`, of field_type."""
    return with_config(config)(TypedDict("M", {"f": field_type}))


@with_config(LOOSE)
class Recursive(TypedDict):
    child: NotRequired["Recursive"]


class NotATypedDict(BaseModel):
    f: int = 0


@pytest.mark.parametrize(
    "tested, fragment",
    [
        (model(float), "M.f: core schema type 'float'"),
        (model(Optional[str]), "M.f: core schema type 'nullable'"),
        (model(Union[str, int]), "M.f: core schema type 'union'"),
        (model(Annotated[str, Field(pattern="^a")]), "M.f: str with ['pattern']"),
        (model(Annotated[str, StringConstraints(strip_whitespace=True)]), "M.f: str with ['strip_whitespace']"),
        (model(int), "M.f: an int needs ge and le"),
        (model(Annotated[int, Field(ge=0)]), "M.f: an int needs ge and le"),
        (model(Annotated[int, Field(gt=0, lt=5)]), "M.f: int with ['gt', 'lt']"),
        (model(Annotated[int, Field(ge=5, le=4)]), "M.f: an int needs ge and le"),
        (model(Annotated[int, Field(ge=0, le=5, strict=False)]), "M.f: int with strict=False"),
        (model(Annotated[list[str], Field(max_length=3)]), "M.f: list with ['max_length']"),
        (model(Literal[1, 2]), "M.f: only literals of plain ASCII strings"),
        (model(Literal["it's"]), "M.f: only literals of plain ASCII strings"),
        (model(dict[str, int]), "M.f: only dict with keys and values of any type"),
        (model(Annotated[str, Field(alias="g")]), "M.f: typed-dict-field with ['serialization_alias', 'validation_alias']"),
        (model(str, ConfigDict(extra="ignore")), "M: a model needs exactly the config"),
        (model(str, ConfigDict(extra="forbid", strict=True)), "M: a model needs exactly the config"),
        (model(str, ConfigDict(extra="ignore", strict=True, str_max_length=5)), "M: a model needs exactly the config"),
        (Recursive, "Recursive.child: recursive models are not supported"),
        (NotATypedDict, "NotATypedDict: a model must be a TypedDict, not 'model'"),
    ],
)
def test_unsupported_feature_stops_the_generator(tested, fragment):
    with pytest.raises(SchemaNotSupported) as caught:
        render({"M": tested})
    assert fragment in str(caught.value)


def test_a_model_name_must_not_hide_a_nested_model():
    @with_config(LOOSE)
    class Inner(TypedDict):
        f: str

    @with_config(LOOSE)
    class Outer(TypedDict):
        inner: Inner

    assert "OUTER = ('typed-dict', {\n    'inner': (True, INNER),\n})" in render({"OUTER": Outer})
    assert "\nTOP = OUTER\n" in render({"TOP": Outer})
    with pytest.raises(SchemaNotSupported, match="MODELS name INNER is also the name of a nested model"):
        render({"INNER": Outer})


def test_the_rendered_module_imports_nothing():
    from cni_bridge.models import MODELS

    source = render(MODELS)
    assert "import" not in source
    namespace: dict = {}
    exec(source, namespace)
    assert set(MODELS) <= set(namespace)
