from mesh.runtime.instance import run
from services.orders.servicer import make_servicers

if __name__ == "__main__":
    run("orders", make_servicers)
