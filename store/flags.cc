#include "store/store.h"

namespace parley::store {

void StoreConfig::AddFlags(core::FlagSet& f) {
  f.Group("Store");
  // The URI may carry credentials: masked in the logged configuration.
  f.Add("--mongodb-uri", &mongodb_uri,
        "MongoDB connection string; unset = embedded file store in --data-dir", "MONGODB_URI",
        /*secret=*/true);
  f.Add("--database-name", &database, "MongoDB database", "DATABASE_NAME");
  f.Add("--mongo-write-concern", &write_concern,
        "MongoDB write concern: majority or a number of nodes", "PARLEY_MONGO_WRITE_CONCERN");
  f.Add("--mongo-timeout-ms", &timeout_ms, "MongoDB server selection, connect and socket timeout",
        "PARLEY_MONGO_TIMEOUT_MS");
  f.Add("--mongo-retries", &retries,
        "Retries of a MongoDB write on transient errors before it is spooled",
        "PARLEY_MONGO_RETRIES");
  f.Add("--spool-replay-ms", &replay_interval_ms,
        "How often spooled writes are retried while MongoDB is away", "PARLEY_SPOOL_REPLAY_MS");
}

}  // namespace parley::store
