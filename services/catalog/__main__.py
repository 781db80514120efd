from mesh.runtime.instance import run
from services.catalog.servicer import make_servicers

if __name__ == "__main__":
    run("catalog", make_servicers)
