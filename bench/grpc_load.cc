// A small closed-loop gRPC load generator for the benchmarks (what wrk is for HTTP, ghz for
// gRPC): N callers, each sending one unary call at a time from a file of pre-serialized
// request messages, over C HTTP/2 connections shared round-robin (ghz's default: one). Prints
// one JSON line with calls, errors, wall time, calls/s and latency percentiles.
//
// Written in C++ so that the client's own cost stays far below the service's: a Python client
// spends about as long per call as the service it measures.
//
//   grpc_load --target 127.0.0.1:50051 --method /inference.GRPCInferenceService/ModelInfer
//             --requests FILE --concurrency 16 (--count N | --seconds S) [--warmup N]
//             [--connections C]
//
// FILE holds the messages back to back, each preceded by its length (uint32, little-endian).
// Built by bench/model_service.py with g++ against Debian's libgrpc++-dev.
#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/codegen/client_unary_call.h>
#include <grpcpp/impl/codegen/rpc_method.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string target;
  std::string method;
  std::string requests;
  int concurrency = 1;
  int connections = 1;
  long count = 0;
  double seconds = 0;
  long warmup = 200;
};

std::vector<grpc::ByteBuffer> read_requests(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<grpc::ByteBuffer> out;
  size_t at = 0;
  while (at + 4 <= data.size()) {
    uint32_t length = 0;
    std::memcpy(&length, data.data() + at, 4);
    at += 4;
    if (at + length > data.size()) break;
    grpc::Slice slice(data.data() + at, length);
    out.emplace_back(&slice, 1);
    at += length;
  }
  return out;
}

struct Worker {
  std::vector<double> latencies;
  long errors = 0;
  std::string first_error;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string key = argv[i], value = argv[i + 1];
    if (key == "--target") o.target = value;
    else if (key == "--method") o.method = value;
    else if (key == "--requests") o.requests = value;
    else if (key == "--concurrency") o.concurrency = std::stoi(value);
    else if (key == "--connections") o.connections = std::stoi(value);
    else if (key == "--count") o.count = std::stol(value);
    else if (key == "--seconds") o.seconds = std::stod(value);
    else if (key == "--warmup") o.warmup = std::stol(value);
    else {
      std::cerr << "unknown option " << key << "\n";
      std::exit(2);
    }
  }
  if (o.target.empty() || o.method.empty() || o.requests.empty() || o.concurrency < 1 ||
      o.connections < 1 ||
      (o.count <= 0 && o.seconds <= 0)) {
    std::cerr << "usage: grpc_load --target H:P --method /pkg.Service/Method --requests FILE "
                 "--concurrency N (--count N | --seconds S) [--warmup N]\n";
    std::exit(2);
  }
  return o;
}

double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t index = static_cast<size_t>(p / 100.0 * (sorted.size() - 1) + 0.5);
  return sorted[std::min(index, sorted.size() - 1)];
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  std::vector<grpc::ByteBuffer> requests = read_requests(o.requests);
  if (requests.empty()) {
    std::cerr << "no requests in " << o.requests << "\n";
    return 2;
  }
  std::vector<Worker> workers(o.concurrency);
  std::vector<std::thread> threads;
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  const long per_worker = o.count > 0 ? (o.count + o.concurrency - 1) / o.concurrency : 0;
  Clock::time_point started, end;

  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int c = 0; c < o.connections; ++c) {
    grpc::ChannelArguments args;
    // Distinct arguments, or gRPC would share one connection between the channels.
    args.SetInt("grpc.channel_id", c);
    args.SetMaxReceiveMessageSize(-1);
    channels.push_back(
        grpc::CreateCustomChannel(o.target, grpc::InsecureChannelCredentials(), args));
  }
  for (int w = 0; w < o.concurrency; ++w) {
    threads.emplace_back([&, w] {
      auto channel = channels[w % channels.size()];
      grpc::internal::RpcMethod method(o.method.c_str(), grpc::internal::RpcMethod::NORMAL_RPC,
                                       channel);
      Worker& me = workers[w];
      auto call = [&](size_t index) {
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
        grpc::ByteBuffer response;
        grpc::Status status =
            grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
                channel.get(), method, &context, requests[index % requests.size()], &response);
        if (!status.ok()) {
          if (me.errors++ == 0) me.first_error = status.error_message();
        }
      };
      for (long i = 0; i < o.warmup; ++i) call(w + i);
      me.errors = 0;
      ready.fetch_add(1);
      while (!go.load()) std::this_thread::yield();
      size_t index = w;
      for (long i = 0; per_worker == 0 || i < per_worker; ++i) {
        auto begin = Clock::now();
        if (per_worker == 0 && begin >= end) break;
        call(index);
        me.latencies.push_back(std::chrono::duration<double>(Clock::now() - begin).count());
        index += o.concurrency;
      }
    });
  }
  while (ready.load() < o.concurrency) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  started = Clock::now();
  end = started + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds));
  go.store(true);
  for (auto& t : threads) t.join();
  double wall = std::chrono::duration<double>(Clock::now() - started).count();

  std::vector<double> all;
  long errors = 0;
  std::string first_error;
  for (auto& w : workers) {
    all.insert(all.end(), w.latencies.begin(), w.latencies.end());
    errors += w.errors;
    if (first_error.empty()) first_error = w.first_error;
  }
  std::sort(all.begin(), all.end());
  std::string escaped;
  for (char c : first_error) {
    if (c == '"' || c == '\\') escaped += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) escaped += c;
  }
  std::printf(
      "{\"calls\": %zu, \"errors\": %ld, \"first_error\": \"%s\", \"wall_seconds\": %.4f, "
      "\"calls_per_second\": %.1f, \"p50_ms\": %.4f, \"p90_ms\": %.4f, \"p99_ms\": %.4f}\n",
      all.size(), errors, escaped.c_str(), wall, all.size() / wall, percentile(all, 50) * 1000,
      percentile(all, 90) * 1000, percentile(all, 99) * 1000);
  return errors == 0 ? 0 : 1;
}
