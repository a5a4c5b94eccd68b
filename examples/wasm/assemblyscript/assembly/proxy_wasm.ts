// A minimal proxy-wasm ABI 0.2.1 binding for AssemblyScript 0.28: the host
// calls the plugin needs and the exports a proxy-wasm host calls. The public
// SDK (@solo-io/proxy-runtime 0.1.x) targets AssemblyScript 0.14 and no
// longer compiles under 0.28, so this small binding stands in for it.

// Host calls (module "env").
@external("env", "proxy_log")
declare function proxy_log(level: u32, msg: usize, msgSize: usize): u32;
@external("env", "proxy_add_header_map_value")
declare function proxy_add_header_map_value(mapType: u32, key: usize, keySize: usize, value: usize, valueSize: usize): u32;
@external("env", "proxy_replace_header_map_value")
declare function proxy_replace_header_map_value(mapType: u32, key: usize, keySize: usize, value: usize, valueSize: usize): u32;
@external("env", "proxy_get_buffer_bytes")
declare function proxy_get_buffer_bytes(bufferType: u32, start: u32, maxSize: u32, retData: usize, retSize: usize): u32;

export const enum MapType { RequestHeaders = 0, RequestTrailers = 1, ResponseHeaders = 2, ResponseTrailers = 3 }
export const enum BufferType { HttpRequestBody = 0, HttpResponseBody = 1, VmConfiguration = 6, PluginConfiguration = 7 }
export const enum Action { Continue = 0, Pause = 1 }
export const enum LogLevel { Trace = 0, Debug = 1, Info = 2, Warn = 3, Error = 4, Critical = 5 }

export function log(level: LogLevel, msg: string): void {
  const b = String.UTF8.encode(msg);
  proxy_log(level, changetype<usize>(b), b.byteLength);
}

export function addRequestHeader(key: string, value: string): void {
  const k = String.UTF8.encode(key);
  const v = String.UTF8.encode(value);
  proxy_add_header_map_value(MapType.RequestHeaders, changetype<usize>(k), k.byteLength, changetype<usize>(v), v.byteLength);
}

export function replaceResponseHeader(key: string, value: string): void {
  const k = String.UTF8.encode(key);
  const v = String.UTF8.encode(value);
  proxy_replace_header_map_value(MapType.ResponseHeaders, changetype<usize>(k), k.byteLength, changetype<usize>(v), v.byteLength);
}

// getBuffer returns size bytes of a host buffer as a UTF-8 string.
export function getBufferString(t: BufferType, size: u32): string {
  if (size == 0) return "";
  const ret = heap.alloc(8);
  if (proxy_get_buffer_bytes(t, 0, size, ret, ret + 4) != 0) {
    heap.free(ret);
    return "";
  }
  const ptr = load<u32>(ret);
  const n = load<u32>(ret + 4);
  heap.free(ret);
  const s = String.UTF8.decodeUnsafe(<usize>ptr, <usize>n);
  heap.free(<usize>ptr);
  return s;
}

// Plugin is what a module implements; set it with setPlugin.
export class Plugin {
  onConfigure(configuration: string): bool { return true; }
  onRequestHeaders(contextID: u32, headers: u32, endOfStream: bool): Action { return Action.Continue; }
  onResponseHeaders(contextID: u32, headers: u32, endOfStream: bool): Action { return Action.Continue; }
}

let plugin: Plugin = new Plugin();

export function setPlugin(p: Plugin): void { plugin = p; }

// Exports called by the host (re-exported by the module's entry file).
export function proxy_abi_version_0_2_1(): void {}
export function proxy_on_memory_allocate(size: usize): usize { return heap.alloc(size); }
export function proxy_on_context_create(contextID: u32, parentID: u32): void {}
export function proxy_on_vm_start(rootID: u32, vmConfigSize: u32): bool { return true; }
export function proxy_on_configure(rootID: u32, configSize: u32): bool {
  return plugin.onConfigure(getBufferString(BufferType.PluginConfiguration, configSize));
}
export function proxy_on_request_headers(contextID: u32, headers: u32, endOfStream: bool): Action {
  return plugin.onRequestHeaders(contextID, headers, endOfStream);
}
export function proxy_on_response_headers(contextID: u32, headers: u32, endOfStream: bool): Action {
  return plugin.onResponseHeaders(contextID, headers, endOfStream);
}
export function proxy_on_done(contextID: u32): bool { return true; }
export function proxy_on_delete(contextID: u32): void {}
