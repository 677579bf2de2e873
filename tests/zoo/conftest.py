import pytest

from zoo import SLOW, case, model_names


def pytest_generate_tests(metafunc):
    if "zoo" in metafunc.fixturenames:
        names = model_names()
        params = [pytest.param(n, id=n, marks=[pytest.mark.zoo, pytest.mark.xdist_group(n)]
                               + ([pytest.mark.slow] if n in SLOW else [])) for n in names]
        metafunc.parametrize("zoo", params, indirect=True, scope="session")


@pytest.fixture(scope="session")
def zoo(request):
    return case(request.param)
