// A MongoDB for tests that can be stopped and started again on the same port.
//  * MONGODB_URI unset: the pinned jongodb binary (tests/mongo), really killed and restarted
//    (it keeps no data across restarts, like a replacement server).
//  * MONGODB_URI set (a real mongod): reached through a TCP proxy owned by the fixture, so
//    "stopping" cuts every connection and refuses new ones without touching the real server.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

namespace parley::testing {

class MongoServer {
 public:
  MongoServer();
  ~MongoServer();
  MongoServer(const MongoServer&) = delete;
  MongoServer& operator=(const MongoServer&) = delete;

  // mongodb://127.0.0.1:<port>/ (always the fixture's own port).
  std::string uri() const;
  int port() const { return port_; }
  // A database name no other test uses.
  static std::string NewDatabase(const std::string& hint);
  bool external() const { return !external_uri_.empty(); }
  // Drops a test database on a real mongod (jongodb has no drop and forgets all at exit).
  void DropDatabase(const std::string& db);

  void Stop();   // connections refused from now on
  void Start();  // a server answers on the same port again

 private:
  void StartJongodb(int port);
  void StopJongodb();

  std::string external_uri_;
  int port_ = 0;
  int child_ = -1;  // jongodb pid
  bool running_ = true;
  struct Proxy;
  std::unique_ptr<Proxy> proxy_;
};

}  // namespace parley::testing
