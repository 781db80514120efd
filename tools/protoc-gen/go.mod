// Pins the Go code generators that buf runs as local plugins (see buf.gen.yaml).
module polymesh.local/tools/protoc-gen

go 1.25.5

tool (
	google.golang.org/grpc/cmd/protoc-gen-go-grpc
	google.golang.org/protobuf/cmd/protoc-gen-go
)

require (
	google.golang.org/grpc/cmd/protoc-gen-go-grpc v1.6.2 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)
