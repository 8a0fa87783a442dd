-- queue: create, alter, list and drop queues, with their settings
\set SHOW_CONTEXT never
SELECT name, lease_seconds, max_attempts, backoff_base, backoff_cap,
       result_retention, max_payload_bytes
  FROM jq.jq_create_queue('scoring');
SELECT name, lease_seconds, max_attempts, max_payload_bytes
  FROM jq.jq_create_queue('urgent_2', lease_seconds => 60, max_attempts => 3,
                       max_payload_bytes => 4096);

-- creating twice is an error, unless if_not_exists
SELECT jq.jq_create_queue('scoring');
SELECT name FROM jq.jq_create_queue('scoring', if_not_exists => true);

-- alter changes only what is passed
SELECT name, lease_seconds, max_attempts, backoff_base, backoff_cap
  FROM jq.jq_alter_queue('scoring', lease_seconds => 120, backoff_cap => '1 hour');
SELECT name, lease_seconds, max_attempts, backoff_base, backoff_cap, max_payload_bytes
  FROM jq.jq_list_queues();

-- names: a lowercase letter, then lowercase letters, digits, underscores; 48 at most
SELECT jq.jq_create_queue('Scoring');
SELECT jq.jq_create_queue('1queue');
SELECT jq.jq_create_queue('');
SELECT jq.jq_create_queue('a-b');
SELECT jq.jq_create_queue('x; DROP TABLE jq.job; --');
SELECT jq.jq_create_queue(repeat('a', 49));
SELECT name FROM jq.jq_create_queue(repeat('a', 48));
SELECT jq.jq_create_queue(NULL);

-- settings are checked
SELECT jq.jq_create_queue('bad', lease_seconds => 0);
SELECT jq.jq_create_queue('bad', lease_seconds => 86401);
SELECT jq.jq_create_queue('bad', max_attempts => 0);
SELECT jq.jq_create_queue('bad', backoff_base => '0 s');
SELECT jq.jq_create_queue('bad', backoff_base => '10 s', backoff_cap => '5 s');
SELECT jq.jq_create_queue('bad', result_retention => '-1 day');
SELECT jq.jq_create_queue('bad', max_payload_bytes => 8);
SELECT jq.jq_create_queue('bad', max_attempts => NULL);
SELECT jq.jq_alter_queue('scoring', max_attempts => 5000);
SELECT jq.jq_alter_queue('missing', max_attempts => 2);

-- drop refuses a queue with unfinished jobs unless forced
SELECT jq.jq_enqueue('urgent_2', '{"n": 1}') AS job \gset
SELECT jq.jq_drop_queue('urgent_2');
SELECT jq.jq_drop_queue('urgent_2', force => true);
SELECT count(*) AS jobs_left FROM jq.job WHERE id = :job;
SELECT jq.jq_drop_queue('urgent_2');
SELECT jq.jq_drop_queue(repeat('a', 48));
SELECT name FROM jq.jq_list_queues();
