module github.com/weftmesh/weft/examples/wasm

go 1.26
