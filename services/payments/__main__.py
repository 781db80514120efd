from mesh.runtime.instance import run
from services.payments.servicer import make_servicers

if __name__ == "__main__":
    run("payments", make_servicers)
