# bench/lib.sh: helpers shared by the bench sections. Source it.

# write_nginx_conf DIR PORT UPSTREAM [WORKERS] writes DIR/nginx.conf: nginx
# as the peer proxy of the comparisons, worker_processes WORKERS (default
# 2), listening on 127.0.0.1:PORT and proxying with upstream keepalive to
# UPSTREAM (an nginx server address: host:port or unix:/path). All its
# files stay under DIR.
write_nginx_conf() {
  local dir=$1 port=$2 upstream=$3 workers=${4:-2}
  mkdir -p "$dir"
  cat >"$dir/nginx.conf" <<CONF
user root;
worker_processes $workers;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  upstream backend { server $upstream; keepalive 256; }
  server {
    listen 127.0.0.1:$port;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
}
CONF
}
