import { defineConfig } from "vite";

// The build lands in pkg/dashboard/dist, which the Go package embeds.
export default defineConfig({
  base: "/",
  build: {
    outDir: "../pkg/dashboard/dist",
    emptyOutDir: true,
    assetsDir: "assets",
    sourcemap: false,
    chunkSizeWarningLimit: 1024,
  },
  server: {
    // `npm run dev` proxies the API to a running `weft dashboard`.
    proxy: { "/api": "http://127.0.0.1:20001" },
  },
});
