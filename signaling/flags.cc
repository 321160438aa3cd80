#include "core/core.h"
#include "signaling/signaling.h"

namespace parley::signaling {

void ServerConfig::AddFlags(core::FlagSet& f) {
  f.Group("Server");
  f.Add("--bind", &bind_address, "Address to listen on", "PARLEY_BIND");
  f.Add("--port", &port, "TCP port for HTTP and WebSocket (0: any free port)", "PORT");
  f.Add("--allowed-origins", &allowed_origins,
        "Comma-separated origins allowed for WebSocket and CORS ('*' for any). Same-origin pages "
        "and non-browser clients are always allowed",
        "ALLOWED_ORIGINS");
  f.Group("Limits");
  f.AddKiB("--max-message-kib", &max_message_bytes,
           "Largest WebSocket message in KiB; larger closes with 1009", "PARLEY_MAX_MESSAGE_KIB");
  f.AddKiB("--max-body-kib", &max_http_body_bytes, "Largest HTTP request body in KiB (413 above)",
           "PARLEY_MAX_BODY_KIB");
  f.AddKiB("--max-upload-kib", &max_upload_bytes,
           "Largest uploaded recording (POST /api/analyze) in KiB (413 above)",
           "PARLEY_MAX_UPLOAD_KIB");
  f.Add("--max-messages-per-s", &max_messages_per_s,
        "WebSocket messages per second per connection (token bucket rate)",
        "PARLEY_MAX_MESSAGES_PER_S");
  f.Add("--message-burst", &message_burst,
        "WebSocket messages a connection may send at once (token bucket depth)",
        "PARLEY_MESSAGE_BURST");
  f.Add("--idle-timeout", &idle_timeout_s,
        "Seconds without a client message before a WebSocket is closed (1001)",
        "PARLEY_IDLE_TIMEOUT");
  f.Add("--ping-interval", &ping_interval_s,
        "Seconds of silence before the server pings a WebSocket", "PARLEY_PING_INTERVAL");
  f.Add("--pong-timeout", &pong_timeout_s,
        "Seconds to wait for any traffic after a ping before hanging up", "PARLEY_PONG_TIMEOUT");
  f.Add("--max-connections", &max_connections, "WebSocket connections in all",
        "PARLEY_MAX_CONNECTIONS");
  f.Add("--max-connections-per-ip", &max_connections_per_ip,
        "WebSocket connections from one address", "PARLEY_MAX_CONNECTIONS_PER_IP");
  f.AddKiB("--send-queue-kib", &send_queue_max_bytes,
           "Outgoing bytes queued per WebSocket before the slow-consumer policy applies",
           "PARLEY_SEND_QUEUE_KIB");
}

void AuthConfig::AddFlags(core::FlagSet& f) {
  f.Group("Auth");
  f.Add("--jwt-secret-key", &jwt_secret_key,
        "HS256 secret for bearer tokens; unset = development mode (one local user)",
        "JWT_SECRET_KEY", /*secret=*/true);
}

}  // namespace parley::signaling
