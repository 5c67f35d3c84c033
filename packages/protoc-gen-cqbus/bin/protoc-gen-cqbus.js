#!/usr/bin/env node
// The executable buf and protoc run: reads a CodeGeneratorRequest on stdin, writes the response to stdout. It imports
// the package by its own name, so with `--conditions=@cqbus/source` (and a TypeScript loader) it runs the sources,
// and otherwise the built dist/.
import { runNodeJs } from "@bufbuild/protoplugin"
import { plugin } from "protoc-gen-cqbus"

runNodeJs(plugin)
